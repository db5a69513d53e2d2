"""PyTorch reference definitions of ECO, the OpenPose body model and PAS-Net.

Written from the public code whose checkpoints users hold (the ECO
authors' mzolfaghari/ECO-pytorch and the early zhang-can/ECO-pytorch port,
Hzzone/pytorch-openpose; docs/architecture.md), independently of the Flax
models, so that the two can be checked against each other. They serve three purposes:
  - the converters read the expected tensor names and shapes off them
    (state_dict keys are exactly those of the users' checkpoints:
    `base_model.<layer>.*` and `new_fc.*` for ECO, flat Caffe names for
    OpenPose);
  - the parity tests give them random weights, save them in the users'
    formats and compare their outputs with the converted Flax models;
  - the benchmarks time them against the Flax models.

Inputs are RGB 0..255 like the Flax models' (frames NCHW, videos NCTHW), and
every branch normalises its own input, so both sides get the same tensor.
Outputs are dicts keyed like PASNet.features in Flax (NCHW maps).
"""

import torch
import torch.nn.functional as F
from torch import nn

# Caffe BN-Inception's per-channel mean, in BGR order.
BGR_MEAN = (104.0, 117.0, 128.0)
BN_EPS = 1e-5

FUSION_STYLES = ('A', 'I', 'E*A', 'A+E*A', 'conv(A,E*A)', 'A+pool(I)',
                 'conv(A,I)', 'A+pool(I)+pool(F)', 'conv(A,I,F)')
# lambda1..lambda4 of the paper (Sec. III-B).
LAMBDAS = (1.5, 1.5, 0.5, 1.0)
APPEARANCE_CHANNELS = 96
POSE_TAP_CHANNELS = 128
NUM_KEYPOINTS = 18


def appearance_input(rgb):
  """RGB 0..255 (N, 3, H, W) -> the BGR, mean-subtracted, unscaled input of ECO."""
  mean = torch.tensor(BGR_MEAN, dtype=rgb.dtype, device=rgb.device)
  return rgb.flip(1) - mean.view(1, 3, 1, 1)


def pose_input(rgb):
  """RGB 0..255 (N, 3, H, W) -> OpenPose's input, BGR / 256 - 0.5."""
  return rgb.flip(1) / 256.0 - 0.5


# ---------------------------------------------------------------- ECO, 2D part


# (name, input channels, output channels, kernel, stride, pad) of every 2D conv
# up to inception_3c, in data-flow order. Each has a BatchNorm `<name>_bn`.
def _inception_convs(prefix, in_channels, width_3x3, width_proj):
  return (
      (f'{prefix}_1x1', in_channels, 64, 1, 1, 0),
      (f'{prefix}_3x3_reduce', in_channels, 64, 1, 1, 0),
      (f'{prefix}_3x3', 64, width_3x3, 3, 1, 1),
      (f'{prefix}_double_3x3_reduce', in_channels, 64, 1, 1, 0),
      (f'{prefix}_double_3x3_1', 64, 96, 3, 1, 1),
      (f'{prefix}_double_3x3_2', 96, 96, 3, 1, 1),
      (f'{prefix}_pool_proj', in_channels, width_proj, 1, 1, 0),
  )


APPEARANCE_CONVS = (
    ('conv1_7x7_s2', 3, 64, 7, 2, 3),
    ('conv2_3x3_reduce', 64, 64, 1, 1, 0),
    ('conv2_3x3', 64, 192, 3, 1, 1),
    *_inception_convs('inception_3a', 192, 64, 32),
    *_inception_convs('inception_3b', 256, 96, 64),
    ('inception_3c_double_3x3_reduce', 320, 64, 1, 1, 0),
    ('inception_3c_double_3x3_1', 64, APPEARANCE_CHANNELS, 3, 1, 1),
)

# ---------------------------------------------------------------- ECO, 3D part

# The 3D part as each release's layer list (tf_model_zoo/ECO/ECO.yaml)
# spells it, one row per layer: ('conv', name, input, channels, stride) is a
# 3 x 3 x 3 Conv3d with padding 1; ('bn', name, input) a BatchNorm3d followed
# by an in-place ReLU, so that later readers of `name` see the ReLU'd map;
# ('add', name, a, b) an element-wise sum. A graph of names rather than
# blocks, so that it shares no structure with the Flax module it checks.
SPATIOTEMPORAL_GRAPHS = {
    # mzolfaghari/ECO-pytorch, the authors' release.
    'official': (
        ('conv', 'res3a_2', 'x_A', 128, 1),
        ('bn', 'res3a_bn', 'res3a_2'),
        ('conv', 'res3b_1', 'res3a_bn', 128, 1),
        ('bn', 'res3b_1_bn', 'res3b_1'),
        ('conv', 'res3b_2', 'res3b_1_bn', 128, 1),
        ('add', 'res3b', 'res3b_2', 'res3a_2'),
        ('bn', 'res3b_bn', 'res3b'),
        ('conv', 'res4a_1', 'res3b_bn', 256, 2),
        ('bn', 'res4a_1_bn', 'res4a_1'),
        ('conv', 'res4a_2', 'res4a_1_bn', 256, 1),
        ('conv', 'res4a_down', 'res3b_bn', 256, 2),
        ('add', 'res4a', 'res4a_2', 'res4a_down'),
        ('bn', 'res4a_bn', 'res4a'),
        ('conv', 'res4b_1', 'res4a_bn', 256, 1),
        ('bn', 'res4b_1_bn', 'res4b_1'),
        ('conv', 'res4b_2', 'res4b_1_bn', 256, 1),
        ('add', 'res4b', 'res4b_2', 'res4a'),
        ('bn', 'res4b_bn', 'res4b'),
        ('conv', 'res5a_1', 'res4b_bn', 512, 2),
        ('bn', 'res5a_1_bn', 'res5a_1'),
        ('conv', 'res5a_2', 'res5a_1_bn', 512, 1),
        ('conv', 'res5a_down', 'res4b_bn', 512, 2),
        ('add', 'res5a', 'res5a_2', 'res5a_down'),
        ('bn', 'res5a_bn', 'res5a'),
        ('conv', 'res5b_1', 'res5a_bn', 512, 1),
        ('bn', 'res5b_1_bn', 'res5b_1'),
        ('conv', 'res5b_2', 'res5b_1_bn', 512, 1),
        ('add', 'res5b', 'res5b_2', 'res5a'),
        ('bn', 'res5b_bn', 'res5b'),
    ),
    # zhang-can/ECO-pytorch, the earlier port the authors forked.
    'early': (
        ('conv', 'res3a_1', 'x_A', 128, 1),
        ('bn', 'res3a_1_bn', 'res3a_1'),
        ('conv', 'res3a_2', 'res3a_1_bn', 128, 1),
        ('bn', 'res3a_bn', 'res3a_2'),
        ('conv', 'res3b_1', 'res3a_bn', 128, 1),
        ('bn', 'res3b_1_bn', 'res3b_1'),
        ('conv', 'res3b_2', 'res3b_1_bn', 128, 1),
        ('add', 'res3b', 'res3b_2', 'res3a_2'),
        ('bn', 'res3b_bn', 'res3b'),
        ('conv', 'res4a_1', 'res3b_bn', 256, 2),
        ('bn', 'res4a_1_bn', 'res4a_1'),
        ('conv', 'res4a_2', 'res4a_1_bn', 256, 1),
        ('bn', 'res4a_bn', 'res4a_2'),
        ('conv', 'res4b_1', 'res4a_bn', 256, 1),
        ('bn', 'res4b_1_bn', 'res4b_1'),
        ('conv', 'res4b_2', 'res4b_1_bn', 256, 1),
        ('add', 'res4b', 'res4b_2', 'res4a_2'),
        ('bn', 'res4b_bn', 'res4b'),
        ('conv', 'res5a_1', 'res4b_bn', 512, 2),
        ('bn', 'res5a_1_bn', 'res5a_1'),
        ('conv', 'res5a_2', 'res5a_1_bn', 512, 1),
        ('bn', 'res5a_bn', 'res5a_2'),
        ('conv', 'res5b_1', 'res5a_bn', 512, 1),
        ('bn', 'res5b_1_bn', 'res5b_1'),
        ('conv', 'res5b_2', 'res5b_1_bn', 512, 1),
        ('add', 'res5b', 'res5b_2', 'res5a_2'),
        ('bn', 'res5b_bn', 'res5b'),
    ),
}
# The authors build every Conv3d with a bias; the early port with none.
SPATIOTEMPORAL_BIAS = {'official': True, 'early': False}
SPATIOTEMPORAL_FEATURES = 512


class ECOBase(nn.Module):
  """ECO-pytorch's `base_model`: the 2D part up to inception_3c and the 3D part.

  Every layer is a direct child under its Caffe name, so the state_dict keys
  are flat: `conv1_7x7_s2.weight`, `conv1_7x7_s2_bn.running_mean`, ...
  """

  def __init__(self, spatiotemporal_in_channels=APPEARANCE_CHANNELS,
               layout='official'):
    super().__init__()
    for name, cin, cout, kernel, stride, pad in APPEARANCE_CONVS:
      self.add_module(name, nn.Conv2d(cin, cout, kernel, stride, pad))
      self.add_module(f'{name}_bn', nn.BatchNorm2d(cout, eps=BN_EPS))
    self.graph = SPATIOTEMPORAL_GRAPHS[layout]
    channels = {'x_A': spatiotemporal_in_channels}
    for op, name, source, *rest in self.graph:
      if op == 'conv':
        cout, stride = rest
        self.add_module(name, nn.Conv3d(channels[source], cout, 3, stride, 1,
                                        bias=SPATIOTEMPORAL_BIAS[layout]))
        channels[name] = cout
      elif op == 'bn':
        self.add_module(name, nn.BatchNorm3d(channels[source], eps=BN_EPS))
        channels[name] = channels[source]
      else:
        channels[name] = channels[source]

  def _conv_bn_relu(self, name, x):
    x = getattr(self, name)(x)
    return F.relu(getattr(self, f'{name}_bn')(x))

  def _inception(self, prefix, x):
    branch_1x1 = self._conv_bn_relu(f'{prefix}_1x1', x)
    branch_3x3 = self._conv_bn_relu(f'{prefix}_3x3_reduce', x)
    branch_3x3 = self._conv_bn_relu(f'{prefix}_3x3', branch_3x3)
    branch_double = self._conv_bn_relu(f'{prefix}_double_3x3_reduce', x)
    branch_double = self._conv_bn_relu(f'{prefix}_double_3x3_1', branch_double)
    branch_double = self._conv_bn_relu(f'{prefix}_double_3x3_2', branch_double)
    # Caffe's average pooling divides by the full window, padding included.
    branch_pool = F.avg_pool2d(
        x, 3, 1, 1, ceil_mode=True, count_include_pad=True)
    branch_pool = self._conv_bn_relu(f'{prefix}_pool_proj', branch_pool)
    return torch.cat([branch_1x1, branch_3x3, branch_double, branch_pool], 1)

  def appearance(self, rgb):
    """Frames (N, 3, H, W) RGB 0..255 -> x_A (N, 96, H/8, W/8)."""
    x = appearance_input(rgb)
    x = self._conv_bn_relu('conv1_7x7_s2', x)
    # Caffe rounds pooled sizes up: 224 -> 112 -> 56 (not 55) -> 28.
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = self._conv_bn_relu('conv2_3x3_reduce', x)
    x = self._conv_bn_relu('conv2_3x3', x)
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = self._inception('inception_3a', x)
    x = self._inception('inception_3b', x)
    x = self._conv_bn_relu('inception_3c_double_3x3_reduce', x)
    return self._conv_bn_relu('inception_3c_double_3x3_1', x)

  def spatiotemporal(self, clips):
    """Clips (B, C, T, h, w) -> (B, 512) pooled output of res5b_bn."""
    maps = {'x_A': clips}
    for op, name, source, *rest in self.graph:
      if op == 'conv':
        maps[name] = getattr(self, name)(maps[source])
      elif op == 'bn':
        maps[name] = F.relu(getattr(self, name)(maps[source]))
      else:
        maps[name] = maps[source] + maps[rest[0]]
    x = maps['res5b_bn']
    frames = clips.shape[2]
    # The authors' global_pool: an average over (K/4, 7, 7), ceil mode,
    # stride 1. Where that window is the whole map (224 x 224, K % 4 == 0)
    # use it as they do; elsewhere their code fails or keeps several
    # cells, and the port's choice is the global average.
    if frames % 4 == 0 and x.shape[2:] == (frames // 4, 7, 7):
      return F.avg_pool3d(x, (frames // 4, 7, 7), 1, ceil_mode=True).flatten(1)
    return x.mean(dim=(2, 3, 4))


def frames_of(video):
  """(B, 3, K, H, W) -> (B*K, 3, H, W), the frames of a clip consecutive."""
  batch, channels, frames, height, width = video.shape
  return video.transpose(1, 2).reshape(batch * frames, channels, height, width)


def clips_of(maps, batch):
  """(B*K, C, h, w) -> (B, C, K, h, w), inverse of frames_of's regrouping."""
  frames = maps.shape[0] // batch
  return maps.reshape(batch, frames, *maps.shape[1:]).transpose(1, 2)


class ECO(nn.Module):
  """ECO as ECO-pytorch's TSN wrapper holds it: `base_model` then `new_fc`."""

  def __init__(self,
               num_classes,
               dropout=0.3,
               spatiotemporal_in_channels=APPEARANCE_CHANNELS,
               layout='official'):
    super().__init__()
    self.base_model = ECOBase(spatiotemporal_in_channels, layout)
    self.dropout = nn.Dropout(dropout)
    self.new_fc = nn.Linear(SPATIOTEMPORAL_FEATURES, num_classes)

  def head(self, fused, batch):
    """Per-frame maps (B*K, C, h, w) -> (pooled (B, 512), logits (B, classes))."""
    pooled = self.base_model.spatiotemporal(clips_of(fused, batch))
    return pooled, self.new_fc(self.dropout(pooled))

  def features(self, video):
    """Video (B, 3, K, H, W) RGB 0..255 -> dict of maps and logits."""
    appearance = self.base_model.appearance(frames_of(video))
    pooled, logits = self.head(appearance, video.shape[0])
    return {
        'appearance': appearance,
        'fused': appearance,
        'pooled': pooled,
        'logits': logits
    }

  def forward(self, video):
    return self.features(video)['logits']


# ---------------------------------------------------------------- OpenPose

NUM_PAF = 38
NUM_HEATMAP = 19
NUM_STAGES = 6
STAGE_INPUT_CHANNELS = NUM_PAF + NUM_HEATMAP + POSE_TAP_CHANNELS  # 185

# (name, input channels, output channels, kernel) of the VGG-19 front, with
# 'pool' for the 2 x 2 max pools; every conv is followed by a ReLU.
OPENPOSE_FRONT = (
    ('conv1_1', 3, 64, 3),
    ('conv1_2', 64, 64, 3),
    'pool',
    ('conv2_1', 64, 128, 3),
    ('conv2_2', 128, 128, 3),
    'pool',
    ('conv3_1', 128, 256, 3),
    ('conv3_2', 256, 256, 3),
    ('conv3_3', 256, 256, 3),
    ('conv3_4', 256, 256, 3),
    'pool',
    ('conv4_1', 256, 512, 3),
    ('conv4_2', 512, 512, 3),
    ('conv4_3_CPM', 512, 256, 3),
    ('conv4_4_CPM', 256, POSE_TAP_CHANNELS, 3),
)


def openpose_branch(stage, branch):
  """(name, input channels, output channels, kernel) of one stage's branch.

  Branch 1 (L1) predicts the part affinity fields, branch 2 (L2) the
  heatmaps. The last layer of each has no ReLU (Caffe's model).
  """
  out = NUM_PAF if branch == 1 else NUM_HEATMAP
  if stage == 1:
    return (
        (f'conv5_1_CPM_L{branch}', POSE_TAP_CHANNELS, 128, 3),
        (f'conv5_2_CPM_L{branch}', 128, 128, 3),
        (f'conv5_3_CPM_L{branch}', 128, 128, 3),
        (f'conv5_4_CPM_L{branch}', 128, 512, 1),
        (f'conv5_5_CPM_L{branch}', 512, out, 1),
    )
  return (
      (f'Mconv1_stage{stage}_L{branch}', STAGE_INPUT_CHANNELS, 128, 7),
      *((f'Mconv{i}_stage{stage}_L{branch}', 128, 128, 7) for i in range(2, 6)),
      (f'Mconv6_stage{stage}_L{branch}', 128, 128, 1),
      (f'Mconv7_stage{stage}_L{branch}', 128, out, 1),
  )


class OpenPose(nn.Module):
  """The OpenPose COCO body model (pose_iter_440000), flat Caffe layer names."""

  def __init__(self):
    super().__init__()
    layers = [layer for layer in OPENPOSE_FRONT if layer != 'pool']
    for stage in range(1, NUM_STAGES + 1):
      for branch in (1, 2):
        layers.extend(openpose_branch(stage, branch))
    for name, cin, cout, kernel in layers:
      self.add_module(name, nn.Conv2d(cin, cout, kernel, 1, kernel // 2))

  def _branch(self, stage, branch, x):
    """Returns (the branch's output map, the ReLU'd input of its last layer)."""
    *body, (last, _, _, _) = openpose_branch(stage, branch)
    for name, _, _, _ in body:
      x = F.relu(getattr(self, name)(x))
    return getattr(self, last)(x), x

  def forward(self, rgb):
    """Frames (N, 3, H, W) RGB 0..255 -> dict of (N, C, H/8, W/8) maps."""
    x = pose_input(rgb)
    for layer in OPENPOSE_FRONT:
      if layer == 'pool':
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
      else:
        x = F.relu(getattr(self, layer[0])(x))
    front = x
    for stage in range(1, NUM_STAGES + 1):
      paf, paf_hidden = self._branch(stage, 1, x)
      heatmap, heatmap_hidden = self._branch(stage, 2, x)
      x = torch.cat([paf, heatmap, front], 1)
    return {
        'paf': paf,
        'heatmap': heatmap,
        'implicit': heatmap_hidden,
        'paf_features': paf_hidden,
        # Over the 18 keypoint maps only: the last (background) map is
        # near 1 wherever nobody stands and would drown the pose.
        'explicit': heatmap[:, :NUM_KEYPOINTS].amax(dim=1, keepdim=True),
    }


# ---------------------------------------------------------------- PAS-Net


def channel_pool(x, out_channels=APPEARANCE_CHANNELS):
  """pool(): (N, 128, h, w) -> (N, 96, h, w), adaptive-average channel bins.

  Bin i averages channels floor(i*128/96) .. ceil((i+1)*128/96) - 1.
  """
  in_channels = x.shape[1]
  bins = []
  for i in range(out_channels):
    start = (i * in_channels) // out_channels
    stop = -(-((i + 1) * in_channels) // out_channels)
    bins.append(x[:, start:stop].mean(dim=1))
  return torch.stack(bins, 1)


def fusion_input_channels(style):
  """Input channels of the conv(...) styles' 1 x 1 convolution."""
  return {
      'conv(A,E*A)': 2 * APPEARANCE_CHANNELS,
      'conv(A,I)': APPEARANCE_CHANNELS + POSE_TAP_CHANNELS,
      'conv(A,I,F)': APPEARANCE_CHANNELS + 2 * POSE_TAP_CHANNELS
  }[style]


def fuse(style, a, pose, lambdas=LAMBDAS, conv=None):
  """Table II: the fused per-frame map from x_A and the pose taps.

  a: x_A (N, 96, h, w) or None for style I; pose: OpenPose's dict or None
  for style A; conv: the 1 x 1 convolution of the conv(...) styles.
  """
  lambda1, lambda2, lambda3, lambda4 = lambdas
  if style == 'A':
    return a
  i, f, e = pose['implicit'], pose['paf_features'], pose['explicit']
  if style == 'I':
    return i
  if style == 'E*A':
    return e * a
  if style == 'A+E*A':
    return a + lambda1 * e * a
  if style == 'A+pool(I)':
    return a + lambda2 * channel_pool(i)
  if style == 'A+pool(I)+pool(F)':
    return a + lambda3 * channel_pool(i) + lambda4 * channel_pool(f)
  inputs = {
      'conv(A,E*A)': (a, e * a),
      'conv(A,I)': (a, i),
      'conv(A,I,F)': (a, i, f)
  }[style]
  return conv(torch.cat(inputs, 1))


class PASNet(nn.Module):
  """PAS-Net with ECO (`eco`), OpenPose (`openpose`) and, for the conv(...)
  styles, a 1 x 1 fusion conv (`fusion_conv`) that starts as the identity
  on x_A."""

  def __init__(self,
               num_classes,
               fusion='A+pool(I)+pool(F)',
               dropout=0.3,
               lambdas=LAMBDAS,
               layout='official'):
    super().__init__()
    if fusion not in FUSION_STYLES:
      raise ValueError(
          f'unknown fusion style {fusion!r}; valid: {FUSION_STYLES}')
    self.style = fusion
    self.lambdas = lambdas
    fused_channels = POSE_TAP_CHANNELS if fusion == 'I' else APPEARANCE_CHANNELS
    self.eco = ECO(num_classes, dropout, fused_channels, layout)
    self.openpose = OpenPose() if fusion != 'A' else None
    self.fusion_conv = None
    if fusion.startswith('conv('):
      self.fusion_conv = nn.Conv2d(
          fusion_input_channels(fusion), APPEARANCE_CHANNELS, 1)
      with torch.no_grad():
        self.fusion_conv.weight.zero_()
        self.fusion_conv.weight[:, :APPEARANCE_CHANNELS, 0,
                                0] = torch.eye(APPEARANCE_CHANNELS)
        self.fusion_conv.bias.zero_()

  def features(self, video):
    """Video (B, 3, K, H, W) RGB 0..255 -> dict of per-frame maps and logits."""
    frames = frames_of(video)
    features = {}
    a = None
    if self.style != 'I':
      a = features['appearance'] = self.eco.base_model.appearance(frames)
    pose = None
    if self.openpose is not None:
      pose = self.openpose(frames)
      features.update(pose)
    fused = features['fused'] = fuse(self.style, a, pose, self.lambdas,
                                     self.fusion_conv)
    features['pooled'], features['logits'] = self.eco.head(
        fused, video.shape[0])
    return features

  def forward(self, video):
    return self.features(video)['logits']


# ---------------------------------------------------------------- test support


@torch.no_grad()
def calibrate_batchnorm(model, *inputs):
  """Sets every BatchNorm's running statistics to those of one batch.

  With random weights and random running statistics the signal of a deep
  network dies out before the 3D part, and a wrong port still matches.
  One train-mode pass with momentum None (a cumulative average over the
  single batch seen since the reset) makes the running statistics exactly
  the batch's; the model is left in eval mode.
  """
  model.eval()
  norms = [
      m for m in model.modules()
      if isinstance(m, nn.modules.batchnorm._BatchNorm)
  ]
  momenta = [norm.momentum for norm in norms]
  for norm in norms:
    norm.reset_running_stats()
    norm.momentum = None
    norm.train()
  model(*inputs)
  for norm, momentum in zip(norms, momenta):
    norm.momentum = momentum
    norm.eval()
  return model
