"""N_rgb: the 2D part of ECO, BN-Inception up to inception_3c.

Input frames (N, H, W, 3), RGB 0..255; output x_A (N, H/8, W/8, 96).
Layer names are those of ECO-pytorch, so converted checkpoints map one to one.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pasnet_jax.models import layers

# Caffe BN-Inception's mean, in BGR order; the network takes unscaled BGR.
BGR_MEAN = (104.0, 117.0, 128.0)


class Appearance(nn.Module):
  """ECO's BN-Inception 2D part.

  Attributes:
    bn_policy: layers.BN_POLICIES. "frozen": every BatchNorm uses its running
      statistics, also in training, and its scale and offset get no
      gradient; "partial" (ECO-pytorch's default): all but the first
      BatchNorm are frozen; "trainable" (the authors' finetune): none is.
    dtype: compute dtype; parameters and statistics stay float32.
    remat: recompute each block in the backward pass instead of storing its
      activations.
  """
  bn_policy: str = 'trainable'
  dtype: Any = jnp.float32
  remat: bool = False

  def _conv_bn_relu(self, x, name, features, kernel, train, stride=1, pad=0):
    x = layers.conv(x, features, kernel, name=name, stride=stride, pad=pad,
                    dtype=self.dtype)
    bn_name = f'{name}_bn'
    x = layers.BatchNorm(frozen=layers.batchnorm_frozen(self.bn_policy, bn_name),
                         dtype=self.dtype, name=bn_name)(x, train)
    return nn.relu(x)

  def _inception(self, x, prefix, widths, train):
    """One inception block; `widths` = (1x1, 3x3, pool_proj) output channels."""
    width_1x1, width_3x3, width_proj = widths
    branch_1x1 = self._conv_bn_relu(x, f'{prefix}_1x1', width_1x1, 1, train)
    branch_3x3 = self._conv_bn_relu(x, f'{prefix}_3x3_reduce', 64, 1, train)
    branch_3x3 = self._conv_bn_relu(branch_3x3, f'{prefix}_3x3', width_3x3, 3,
                                    train, pad=1)
    branch_double = self._conv_bn_relu(x, f'{prefix}_double_3x3_reduce', 64, 1,
                                       train)
    branch_double = self._conv_bn_relu(branch_double, f'{prefix}_double_3x3_1',
                                       96, 3, train, pad=1)
    branch_double = self._conv_bn_relu(branch_double, f'{prefix}_double_3x3_2',
                                       96, 3, train, pad=1)
    branch_pool = layers.avg_pool_ceil(x, 3, 1, 1)
    branch_pool = self._conv_bn_relu(branch_pool, f'{prefix}_pool_proj',
                                     width_proj, 1, train)
    return jnp.concatenate([branch_1x1, branch_3x3, branch_double, branch_pool],
                           axis=-1)

  @nn.compact
  def __call__(self, frames: jax.Array, train: bool = False) -> jax.Array:
    """frames: (N, H, W, 3) RGB 0..255 -> x_A: (N, H/8, W/8, 96) in `dtype`."""
    x = layers.bgr(frames.astype(jnp.float32)) - jnp.asarray(BGR_MEAN)
    x = x.astype(self.dtype)

    def stem(module, x):
      x = module._conv_bn_relu(x, 'conv1_7x7_s2', 64, 7, train, stride=2, pad=3)
      x = layers.max_pool_ceil(x, 3, 2)
      x = module._conv_bn_relu(x, 'conv2_3x3_reduce', 64, 1, train)
      x = module._conv_bn_relu(x, 'conv2_3x3', 192, 3, train, pad=1)
      return layers.max_pool_ceil(x, 3, 2)

    def inception_3a(module, x):
      return module._inception(x, 'inception_3a', (64, 64, 32), train)

    def inception_3b(module, x):
      return module._inception(x, 'inception_3b', (64, 96, 64), train)

    def inception_3c(module, x):
      # ECO keeps only the first two layers of one branch of inception_3c.
      x = module._conv_bn_relu(x, 'inception_3c_double_3x3_reduce', 64, 1, train)
      return module._conv_bn_relu(x, 'inception_3c_double_3x3_1', 96, 3, train,
                                  pad=1)

    for block in (stem, inception_3a, inception_3b, inception_3c):
      x = (nn.remat(block) if self.remat else block)(self, x)
    return x
