"""N_pose: the OpenPose COCO body model (VGG-19 front and six stages).

Input frames (N, H, W, 3), RGB 0..255; everything is returned at stride 8.
Layer names are the Caffe names of pose_iter_440000, so converted
`body_pose_model.pth` weights map one to one.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pasnet_jax.models import layers
from pasnet_jax.models import transform_conv

NUM_PAF = 38
NUM_HEATMAP = 19  # 18 keypoints and the background map, last.
NUM_KEYPOINTS = 18
NUM_STAGES = 6
# How the 7 x 7 and 3 x 3 convolutions run: "direct" (lax.conv), "transform"
# (the FFT for 7 x 7, Winograd for 3 x 3; with the prepared transforms of
# collection transform_conv.TRANSFORMS when given, else from the kernels in
# the call) or "auto": a layer's transform where it is prepared, in float32
# on a CPU, on maps where it measured faster (`transform_pays`;
# docs/transform_convolutions.md), the direct convolution elsewhere.
CONV_FORMS = ('auto', 'direct', 'transform')
# The stage maps' stride: frames of H x W give (H/8) x (W/8) maps.
MAP_STRIDE = 8


def transform_pays(kernel: int, map_height: int, map_width: int,
                   in_features: int, dtype: Any) -> bool:
  """Whether "auto" takes the transform of a `kernel`-square convolution
  (given it prepared) on maps of map_height x map_width x in_features in
  `dtype` on this backend."""
  if jax.default_backend() != 'cpu' or jnp.dtype(dtype) != jnp.float32:
    return False
  if kernel == transform_conv.FFT_KERNEL:
    return (transform_conv.coverage(map_height, map_width, kernel)
            <= transform_conv.MAX_COVERAGE)
  if kernel != transform_conv.WINOGRAD_KERNEL:
    return False
  wide = in_features >= transform_conv.WINOGRAD_WIDE_CHANNELS
  return map_height * map_width <= (
      transform_conv.WINOGRAD_WIDE_MAX_POSITIONS if wide
      else transform_conv.WINOGRAD_MAX_POSITIONS)


def paying_transforms(height: int, width: int, dtype: Any) -> tuple[int, ...]:
  """The kernel sizes whose transforms "auto" takes somewhere in OpenPose on
  frames of height x width: if any layer takes one, the widest layer on the
  smallest maps, the stage maps, does."""
  widest = max(layer[1] for layer in VGG_LAYERS if layer != 'pool')
  return tuple(kernel for kernel in transform_conv.TRANSFORM_KERNELS
               if transform_pays(kernel, height // MAP_STRIDE,
                                 width // MAP_STRIDE, widest, dtype))


# (name, output channels) of the VGG-19 front, with 'pool' for 2 x 2 max pools.
VGG_LAYERS = (
    ('conv1_1', 64), ('conv1_2', 64), 'pool',
    ('conv2_1', 128), ('conv2_2', 128), 'pool',
    ('conv3_1', 256), ('conv3_2', 256), ('conv3_3', 256), ('conv3_4', 256), 'pool',
    ('conv4_1', 512), ('conv4_2', 512), ('conv4_3_CPM', 256), ('conv4_4_CPM', 128),
)


def branch_outputs(branch: int) -> int:
  """Channels of a stage's last layer: L1 = part affinity fields, L2 = heatmaps."""
  return NUM_PAF if branch == 1 else NUM_HEATMAP


def stage_layers(stage: int, branch: int) -> tuple[tuple[str, int, int, bool], ...]:
  """(name, kernel, output channels, ReLU after) of one branch of one stage."""
  last = branch_outputs(branch)
  if stage == 1:
    return tuple((f'conv5_{i}_CPM_L{branch}', 3, 128, True) for i in (1, 2, 3)) + (
        (f'conv5_4_CPM_L{branch}', 1, 512, True),
        (f'conv5_5_CPM_L{branch}', 1, last, False))
  return tuple((f'Mconv{i}_stage{stage}_L{branch}', 7, 128, True)
               for i in range(1, 6)) + (
                   (f'Mconv6_stage{stage}_L{branch}', 1, 128, True),
                   (f'Mconv7_stage{stage}_L{branch}', 1, last, False))


class OpenPose(nn.Module):
  """OpenPose body model, returning its maps and PAS-Net's three feature taps.

  Attributes:
    dtype: compute dtype; parameters stay float32.
    remat: recompute each stage in the backward pass.
    conv_form: CONV_FORMS. Prepared spectra are constants: through them the
      kernels get no gradient.
  """
  dtype: Any = jnp.float32
  remat: bool = False
  conv_form: str = 'auto'

  def _through_transform(self, x, name, kernel):
    if (kernel not in transform_conv.TRANSFORM_KERNELS or
        self.conv_form == 'direct'):
      return False
    return self.conv_form == 'transform' or (
        self.has_variable(transform_conv.TRANSFORMS, name) and
        transform_pays(kernel, *x.shape[1:4], self.dtype))

  def _conv(self, x, name, kernel, features, relu):
    if self._through_transform(x, name, kernel):
      x = transform_conv.TransformConv(features, kernel, dtype=self.dtype,
                                       name=name)(x)
    else:
      x = layers.conv(x, features, kernel, name=name, pad=kernel // 2,
                      dtype=self.dtype)
    return nn.relu(x) if relu else x

  def _branch(self, x, stage, branch):
    """Runs one branch; returns (its output map, the input of its last layer)."""
    *body, last = stage_layers(stage, branch)
    for name, kernel, features, relu in body:
      x = self._conv(x, name, kernel, features, relu)
    name, kernel, features, relu = last
    return self._conv(x, name, kernel, features, relu), x

  @nn.compact
  def __call__(self, frames: jax.Array) -> dict[str, jax.Array]:
    """frames: (N, H, W, 3) RGB 0..255 -> dict of (N, H/8, W/8, C) float32 maps.

    Keys: `paf` (38), `heatmap` (19, no final ReLU, as in Caffe),
    `implicit` x_I (128), `paf_features` x_F (128), `explicit` x_E (1).
    """
    x = layers.bgr(frames.astype(jnp.float32)) / 256.0 - 0.5
    x = x.astype(self.dtype)

    def front(module, x):
      for layer in VGG_LAYERS:
        if layer == 'pool':
          x = layers.max_pool_ceil(x, 2, 2)
        else:
          x = module._conv(x, layer[0], 3, layer[1], True)
      return x

    def make_stage(number):
      # The stage number is bound here rather than passed, so that remat
      # sees it as a constant and not as a traced argument.
      def stage(module, x, features):
        paf, paf_hidden = module._branch(x, number, 1)
        heatmap, heatmap_hidden = module._branch(x, number, 2)
        next_input = jnp.concatenate([paf, heatmap, features], axis=-1)
        return next_input, paf, heatmap, paf_hidden, heatmap_hidden
      return stage

    maybe_remat = nn.remat if self.remat else (lambda f: f)
    features = maybe_remat(front)(self, x)
    x = features
    for number in range(1, NUM_STAGES + 1):
      x, paf, heatmap, paf_hidden, heatmap_hidden = maybe_remat(
          make_stage(number))(self, x, features)

    heatmap = heatmap.astype(jnp.float32)
    return {
        'paf': paf.astype(jnp.float32),
        'heatmap': heatmap,
        'implicit': heatmap_hidden.astype(jnp.float32),
        'paf_features': paf_hidden.astype(jnp.float32),
        # The background map (last channel) is near 1 wherever nobody stands,
        # so the maximum runs over the 18 keypoint maps only.
        'explicit': jnp.max(heatmap[..., :NUM_KEYPOINTS], axis=-1, keepdims=True),
    }
