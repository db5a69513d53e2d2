"""N_st: ECO's 3D part, a 3D ResNet-18 from res3 to res5, and its pooling.

Input (B, T, h, w, C) (C = 96 for every style but "I"); output the 512-d
global average (B, 512). Layer names are ECO-pytorch's. Two layouts exist
(docs/architecture.md, "Two ECO layouts"):
  "official": the ECO authors' release (mzolfaghari/ECO-pytorch), whose
    Kinetics ECO-Lite checkpoint users hold: `res3a_2` reads x_A directly,
    res4a/res5a have 3x3x3 stride-2 projection shortcuts (`res4a_down`,
    `res5a_down`), every convolution has a bias;
  "early": the port the authors forked (zhang-can/ECO-pytorch): `res3a_1`
    and `res3a_1_bn` before `res3a_2`, no shortcut convolution (res4a and
    res5a have no skip), no biases.
In both the skip path carries pre-BatchNorm sums, Caffe style.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pasnet_jax.models import layers

LAYOUTS = ('official', 'early')
FEATURES = 512
# (stage, output channels, stride of its first block)
STAGES = (('res3', 128, 1), ('res4', 256, 2), ('res5', 512, 2))
# A layer only one layout has, telling a checkpoint's layout by its names.
_LAYOUT_MARKERS = {'official': 'res4a_down', 'early': 'res3a_1'}


def layout_of(spatiotemporal_params) -> str | None:
  """"official" or "early" from the layer names of converted 3D weights.

  None when the tree has neither marker layer (no 3D part, or another net).
  """
  for layout, marker in _LAYOUT_MARKERS.items():
    if marker in spatiotemporal_params:
      return layout
  return None


def first_conv(layout: str) -> str:
  """The 3D convolution reading the fused maps; style I changes its input."""
  return 'res3a_2' if layout == 'official' else 'res3a_1'


class Spatiotemporal(nn.Module):
  """ECO's 3D ResNet-18 part in either layout.

  Attributes:
    layout: "official" or "early", see the module docstring.
    bn_policy: layers.BN_POLICIES; "partial" freezes every 3D BatchNorm, as
      the authors' partial BN does (only the first 2D one trains).
    dtype: compute dtype; parameters and statistics stay float32.
    remat: recompute each block in the backward pass.
    conv3d: "auto", "native" or "as_2d"; see layers.conv.
  """
  layout: str = 'official'
  bn_policy: str = 'trainable'
  dtype: Any = jnp.float32
  remat: bool = False
  conv3d: str = 'auto'

  def _bn_relu(self, x, name, train):
    x = layers.BatchNorm(frozen=layers.batchnorm_frozen(self.bn_policy, name),
                         dtype=self.dtype, name=name)(x, train)
    return nn.relu(x)

  def _conv(self, x, name, features, stride=1):
    return layers.conv(x, features, 3, name=name, stride=stride, pad=1,
                       use_bias=self.layout == 'official', dtype=self.dtype,
                       conv3d=self.conv3d)

  def _block(self, x, skip, name, features, stride, train):
    """(post-ReLU output, pre-BN sum) of block `name` (e.g. "res4a")."""
    first = name.endswith('a')
    y = self._conv(x, f'{name}_1', features, stride)
    y = self._bn_relu(y, f'{name}_1_bn', train)
    y = self._conv(y, f'{name}_2', features)
    if not first:
      y = y + skip
    elif self.layout == 'official' and stride != 1:
      y = y + self._conv(x, f'{name}_down', features, stride)
    return self._bn_relu(y, f'{name}_bn', train), y

  def _any_block(self, x, skip, name, features, stride, train):
    if name == 'res3a' and self.layout == 'official':
      # The official layout keeps only res3a's second convolution.
      summed = self._conv(x, 'res3a_2', features)
      return self._bn_relu(summed, 'res3a_bn', train), summed
    return self._block(x, skip, name, features, stride, train)

  @nn.compact
  def __call__(self, clips: jax.Array, train: bool = False) -> jax.Array:
    """clips: (B, T, h, w, C) -> (B, 512) float32 global average."""
    if self.layout not in LAYOUTS:
      raise ValueError(f'unknown ECO layout {self.layout!r}; valid: {LAYOUTS}')
    x, skip = clips.astype(self.dtype), None
    for stage, features, stride in STAGES:
      for suffix in ('a', 'b'):
        def block(module, x, skip, name=stage + suffix, features=features,
                  stride=stride if suffix == 'a' else 1):
          return module._any_block(x, skip, name, features, stride, train)
        x, skip = (nn.remat(block) if self.remat else block)(self, x, skip)
    # The authors pool with a (K/4, 7, 7) average window, which is the global
    # average at 224 x 224 for every K their code accepts (K % 4 == 0); the
    # global average also serves every other size and K.
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
