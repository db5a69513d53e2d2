"""PAS-Net: appearance and pose ConvNets, fused per frame, then a 3D ConvNet.

PASNet(V) = N_st(N_fuse(N_rgb(T_i), N_pose(T_i)) for the K frames T_i).
The 2D parts run on the B * K frames of a batch as one batch; the frames of
a clip stay consecutive, as in ECO-pytorch, when regrouped for the 3D part.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pasnet_jax.models import fusion as fusion_lib
from pasnet_jax.models import transform_conv
from pasnet_jax.models.appearance import Appearance
from pasnet_jax.models.fusion import Fusion, Lambdas
from pasnet_jax.models import pose as pose_lib
from pasnet_jax.models.pose import OpenPose
from pasnet_jax.models.spatiotemporal import Spatiotemporal

STRIDE = 32
# Compute dtypes by their config names (config.model.dtype).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def check_video_shape(shape: tuple[int, ...]) -> None:
  """Raises ValueError unless `shape` is (B, K, H, W, 3) with H, W % 32 == 0."""
  if len(shape) != 5 or shape[-1] != 3:
    raise ValueError(f'video must have shape (B, K, H, W, 3); got {shape}')
  if shape[1] < 1:
    raise ValueError(f'video needs at least one frame (K >= 1); got {shape}')
  if shape[2] % STRIDE or shape[3] % STRIDE:
    raise ValueError(f'frame height and width must be multiples of {STRIDE}; '
                     f'got {shape[2]} x {shape[3]}')


class PASNet(nn.Module):
  """The pose- and appearance-based spatiotemporal network.

  Attributes:
    num_classes: size of the classifier.
    fusion: one of fusion.STYLES; "A" is ECO, without the pose branch.
    dropout: dropout rate before the classifier.
    dtype: compute dtype (e.g. jnp.bfloat16); parameters, BatchNorm
      statistics and the logits stay float32.
    bn_policy: BatchNorm policy of ECO's 2D and 3D parts (layers.BN_POLICIES).
    freeze_pose: no gradient flows into the pose branch, so none of its
      backward pass is computed.
    remat: recompute blocks in the backward pass to save memory.
    lambdas: weights of the additive fusion styles.
    fusion_conv_init: "identity" or "random" for the conv(...) styles.
    eco_layout: "official" (the ECO authors' release) or "early" (the port
      they forked); see spatiotemporal.LAYOUTS.
    conv3d: form of the 3D convolutions, layers.CONV3D_FORMS.
    pose_conv: form of OpenPose's 7 x 7 and 3 x 3 convolutions,
      pose.CONV_FORMS; "auto" is "direct" while the pose branch trains,
      since prepared transforms (`with_pose_transforms`) pass no gradient to
      the kernels.
  """
  num_classes: int
  fusion: str = 'A+pool(I)+pool(F)'
  dropout: float = 0.3
  dtype: Any = jnp.float32
  bn_policy: str = 'trainable'
  freeze_pose: bool = True
  remat: bool = False
  lambdas: Lambdas = Lambdas()
  fusion_conv_init: str = 'identity'
  eco_layout: str = 'official'
  conv3d: str = 'auto'
  pose_conv: str = 'auto'

  @nn.compact
  def __call__(self, video: jax.Array, train: bool = False,
               return_features: bool = False):
    """video: (B, K, H, W, 3) RGB 0..255, any real dtype.

    Returns logits (B, num_classes) float32, or with `return_features` a
    dict of them and every intermediate map (per frame, (B*K, h, w, C)).
    Dropout needs the 'dropout' RNG when `train` is True.
    """
    # The model's own guard, for callers other than the programs (whose
    # configs are checked on entry): style "A" would run at any size.
    check_video_shape(video.shape)
    batch, frames_per_clip, height, width, _ = video.shape
    frames = video.reshape(batch * frames_per_clip, height, width, 3)
    features = {}

    appearance = None
    if fusion_lib.uses_appearance(self.fusion):
      appearance = Appearance(bn_policy=self.bn_policy, dtype=self.dtype,
                              remat=self.remat, name='appearance')(frames, train)
      features['appearance'] = appearance
    pose = None
    if fusion_lib.uses_pose(self.fusion):
      pose_trains = train and not self.freeze_pose
      if (pose_trains and self.pose_conv == 'transform' and
          self.has_variable(transform_conv.TRANSFORMS, 'pose')):
        raise ValueError('prepared pose transforms are constants: the pose branch '
                         'would not train; drop them or use pose_conv "direct"')
      conv_form = 'direct' if pose_trains and self.pose_conv == 'auto' else self.pose_conv
      pose = OpenPose(dtype=self.dtype, remat=self.remat, conv_form=conv_form,
                      name='pose')(frames)
      if self.freeze_pose:
        pose = jax.lax.stop_gradient(pose)
      features.update(pose)

    fused = Fusion(style=self.fusion, lambdas=self.lambdas,
                   conv_init=self.fusion_conv_init, dtype=self.dtype,
                   name='fusion')(appearance, pose)
    features['fused'] = fused
    clips = fused.reshape(batch, frames_per_clip, *fused.shape[1:])
    pooled = Spatiotemporal(layout=self.eco_layout, bn_policy=self.bn_policy,
                            dtype=self.dtype, remat=self.remat,
                            conv3d=self.conv3d,
                            name='spatiotemporal')(clips, train)
    features['pooled'] = pooled
    x = nn.Dropout(self.dropout, deterministic=not train)(pooled)
    # ECO-pytorch's new_fc: Xavier-uniform weights, zero bias.
    logits = nn.Dense(self.num_classes, dtype=jnp.float32,
                      param_dtype=jnp.float32,
                      kernel_init=nn.initializers.xavier_uniform(),
                      name='classifier')(x)
    if return_features:
      features['logits'] = logits
      return {k: v.astype(jnp.float32) for k, v in features.items()}
    return logits

  def features(self, video: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Every intermediate map; see __call__."""
    return self(video, train=train, return_features=True)


def with_pose_transforms(variables: dict,
                         memory_limit: int = transform_conv.DEFAULT_MEMORY_LIMIT,
                         kernel_sizes: Sequence[int] = transform_conv.TRANSFORM_KERNELS
                         ) -> dict:
  """PASNet `variables` with the transforms of its frozen pose branch's
  kernels of `kernel_sizes` (transform_conv.prepare) beside them; computed
  once per set of weights, whatever the frame size."""
  if 'pose' not in variables['params']:
    return variables
  transforms = transform_conv.prepare(variables['params']['pose'], memory_limit,
                                      kernel_sizes)
  if not transforms:
    return variables
  return {**variables, transform_conv.TRANSFORMS: {'pose': transforms}}


def pose_transform_kernels(model: PASNet, height: int, width: int,
                           train: bool = False) -> tuple[int, ...]:
  """The kernel sizes whose prepared pose transforms `model` runs on frames
  of height x width (when they are given), rather than convolving directly."""
  if (not fusion_lib.uses_pose(model.fusion) or model.pose_conv == 'direct' or
      (train and not model.freeze_pose)):
    return ()
  if model.pose_conv == 'transform':
    return transform_conv.TRANSFORM_KERNELS
  return pose_lib.paying_transforms(height, width, model.dtype)


def pose_transforms(model: PASNet, variables: dict, height: int, width: int,
                    train: bool = False) -> dict:
  """The prepared pose transforms `model` runs on frames of height x width:
  {'transforms': ...} to merge into the variables it is applied with, or {}
  where it would convolve directly. Callers prepare them through this, so
  that the 1.7 GB and the seconds they take are spent only where used.
  """
  kernel_sizes = pose_transform_kernels(model, height, width, train)
  if not kernel_sizes:
    return {}
  prepared = with_pose_transforms(variables, kernel_sizes=kernel_sizes)
  return {name: value for name, value in prepared.items()
          if name == transform_conv.TRANSFORMS}


def create_model(model_config: ml_collections.ConfigDict, num_classes: int,
                 fusion: str | None = None) -> PASNet:
  """The PASNet `model_config` (config.model) describes; `fusion` overrides
  its style."""
  return PASNet(
      num_classes=num_classes,
      fusion=fusion or model_config.fusion,
      dropout=model_config.dropout,
      dtype=DTYPES[model_config.dtype],
      bn_policy=model_config.bn_policy,
      freeze_pose=model_config.freeze_pose,
      remat=model_config.remat,
      lambdas=Lambdas(**model_config.lambdas.to_dict()),
      fusion_conv_init=model_config.fusion_conv_init,
      eco_layout=model_config.eco_layout,
      pose_conv=model_config.pose_conv)


def _truncated_normal(rng: np.random.Generator, shape, stddev: float) -> np.ndarray:
  """Normal samples redrawn until inside +-2 sigma, scaled to `stddev`."""
  values = rng.standard_normal(shape, dtype=np.float32)
  outside = np.abs(values) > 2
  while outside.any():
    values[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
    outside = np.abs(values) > 2
  # The standard deviation of a unit normal truncated at +-2.
  return values * np.float32(stddev / 0.87962566103423978)


def init_variables(model: nn.Module, seed: int,
                   video_shape: tuple[int, ...]) -> dict:
  """Initial variables with the distributions `model.init` draws, fast.

  `model` is a PASNet or one of its parts, `video_shape` its input's shape.

  `model.init` compiles the whole network together with every initialiser,
  which takes minutes on a small CPU; this draws the same distributions
  (LeCun truncated normal kernels, the classifier's Xavier uniform, zero
  biases, unit scales, the fusion conv's pass-through) with numpy, after a
  shape-only trace.
  """
  shapes = jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32),
                          jax.ShapeDtypeStruct(video_shape, jnp.float32))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    names = [str(getattr(p, 'key', p)) for p in path]
    shape, kind = leaf.shape, names[-1]
    if kind == 'kernel' and names[1] == 'fusion' and model.fusion_conv_init == 'identity':
      return np.asarray(fusion_lib.pass_through_init(None, shape))
    if kind == 'kernel' and names[1] == 'classifier':
      limit = np.sqrt(6.0 / (shape[0] + shape[1]))
      return rng.uniform(-limit, limit, shape).astype(np.float32)
    if kind == 'kernel':
      return _truncated_normal(rng, shape, np.sqrt(1.0 / np.prod(shape[:-1])))
    if kind in ('scale', 'var'):
      return np.ones(shape, np.float32)
    return np.zeros(shape, np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)
