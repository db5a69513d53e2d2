"""N_st: ECO's 3D part, a 3D ResNet-18 from res3 to res5, and its pooling.

Input (B, T, h, w, C) (C = 96 for every style but "I"); output the 512-d
global average (B, 512). Layer names are ECO-pytorch's.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pasnet_jax.models import layers

# (stage name, output channels, stride of its first convolution)
STAGES = (('res3', 128, 1), ('res4', 256, 2), ('res5', 512, 2))
FEATURES = 512


class Spatiotemporal(nn.Module):
  """ECO's 3D ResNet-18 part.

  Unlike a textbook ResNet, the skip path carries the pre-BatchNorm output
  of the previous block's last convolution, and there is no shortcut
  convolution: each stage's first block has no skip at all.

  Attributes:
    train_bn_affine: whether the BatchNorm scale and offset are trained;
      ECO-pytorch updates the 3D statistics but leaves these out of every
      optimizer group.
    dtype: compute dtype; parameters and statistics stay float32.
    remat: recompute each block in the backward pass.
  """
  train_bn_affine: bool = False
  dtype: Any = jnp.float32
  remat: bool = False

  def _bn_relu(self, x, name, train):
    x = layers.BatchNorm(affine_trainable=self.train_bn_affine, dtype=self.dtype,
                         name=name)(x, train)
    return nn.relu(x)

  def _conv(self, x, name, features, stride=1):
    return layers.conv(x, features, 3, name=name, stride=stride, pad=1,
                       use_bias=False, dtype=self.dtype)

  @nn.compact
  def __call__(self, clips: jax.Array, train: bool = False) -> jax.Array:
    """clips: (B, T, h, w, C) -> (B, 512) float32 global average."""
    x = clips.astype(self.dtype)

    def make_block(stage, features, stride, first):
      name = f'{stage}{"a" if first else "b"}'

      def block(module, x, skip):
        y = module._conv(x, f'{name}_1', features, stride if first else 1)
        y = module._bn_relu(y, f'{name}_1_bn', train)
        y = module._conv(y, f'{name}_2', features)
        skip = y if first else y + skip
        return module._bn_relu(skip, f'{name}_bn', train), skip
      return block

    skip = None
    for stage, features, stride in STAGES:
      for first in (True, False):
        block = make_block(stage, features, stride, first)
        if self.remat:
          block = nn.remat(block)
        x, skip = block(self, x, skip)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
