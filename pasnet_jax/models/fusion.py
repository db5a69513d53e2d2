"""N_fuse: the nine fusion styles of the paper's Table II.

Every style combines, per frame and pixel, the appearance features x_A
(96 channels) with the pose taps x_I, x_F (128 channels) and x_E (1 channel),
all at stride 8.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

APPEARANCE_CHANNELS = 96

STYLES = ('A', 'I', 'E*A', 'A+E*A', 'conv(A,E*A)', 'A+pool(I)', 'conv(A,I)',
          'A+pool(I)+pool(F)', 'conv(A,I,F)')


@dataclasses.dataclass(frozen=True)
class Lambdas:
  """Weights of the additive styles (paper Sec. III-B)."""
  explicit: float = 1.5  # lambda1 in A + lambda1 E*A
  implicit: float = 1.5  # lambda2 in A + lambda2 pool(I)
  implicit_with_paf: float = 0.5  # lambda3 in A + lambda3 pool(I) + lambda4 pool(F)
  paf: float = 1.0  # lambda4


# How the conv(...) styles' 1 x 1 convolution starts: passing x_A through,
# or LeCun normal.
CONV_INITS = ('identity', 'random')


def uses_appearance(style: str) -> bool:
  return style != 'I'


def uses_pose(style: str) -> bool:
  return style != 'A'


def channel_pool_matrix(in_channels: int, out_channels: int) -> np.ndarray:
  """(in, out) matrix averaging channels in adaptive-average bins.

  Bin i averages channels floor(i * in / out) .. ceil((i + 1) * in / out) - 1,
  as PyTorch's adaptive average pooling would along the channel axis.
  """
  matrix = np.zeros((in_channels, out_channels), np.float32)
  for i in range(out_channels):
    start = (i * in_channels) // out_channels
    stop = -((-(i + 1) * in_channels) // out_channels)
    matrix[start:stop, i] = 1.0 / (stop - start)
  return matrix


def channel_pool(x: jax.Array, out_channels: int = APPEARANCE_CHANNELS) -> jax.Array:
  """pool(): mean over channel bins, (..., 128) -> (..., 96)."""
  matrix = jnp.asarray(channel_pool_matrix(x.shape[-1], out_channels), x.dtype)
  return x @ matrix


def pass_through_init(key, shape, dtype=jnp.float32):
  """1 x 1 conv kernel (1, 1, Cin, 96) that copies x_A (the first 96 inputs).

  Starting from the identity on x_A lets stage 2 of twice-finetune begin
  where stage 1 ended.
  """
  del key
  kernel = np.zeros(shape, np.float32)
  kernel[0, 0, :shape[3], :] = np.eye(shape[3], dtype=np.float32)
  return jnp.asarray(kernel, dtype)


class Fusion(nn.Module):
  """The fusing network.

  Attributes:
    style: one of STYLES (Table II names).
    lambdas: weights of the additive styles.
    conv_init: one of CONV_INITS, for the conv styles.
    dtype: compute dtype.
  """
  style: str = 'A+pool(I)+pool(F)'
  lambdas: Lambdas = Lambdas()
  conv_init: str = 'identity'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, appearance: jax.Array | None,
               pose: dict[str, jax.Array] | None) -> jax.Array:
    """appearance x_A (N, h, w, 96) or None; pose taps (N, h, w, C) or None.

    Returns the fused map (N, h, w, 96), or 128 channels for style "I", in `dtype`.
    """
    style, lam = self.style, self.lambdas
    cast = lambda name: pose[name].astype(self.dtype)
    if style == 'A':
      return appearance
    if style == 'I':
      return cast('implicit')
    if style == 'E*A':
      return cast('explicit') * appearance
    if style == 'A+E*A':
      return appearance + lam.explicit * cast('explicit') * appearance
    if style == 'A+pool(I)':
      return appearance + lam.implicit * channel_pool(cast('implicit'))
    if style == 'A+pool(I)+pool(F)':
      return (appearance + lam.implicit_with_paf * channel_pool(cast('implicit'))
              + lam.paf * channel_pool(cast('paf_features')))
    inputs = {
        'conv(A,E*A)': [appearance, cast('explicit') * appearance],
        'conv(A,I)': [appearance, cast('implicit')],
        'conv(A,I,F)': [appearance, cast('implicit'), cast('paf_features')],
    }[style]
    kernel_init = {'identity': pass_through_init,
                   'random': nn.initializers.lecun_normal()}[self.conv_init]
    return nn.Conv(APPEARANCE_CHANNELS, (1, 1), kernel_init=kernel_init,
                   dtype=self.dtype, param_dtype=jnp.float32,
                   name='conv')(jnp.concatenate(inputs, axis=-1))
