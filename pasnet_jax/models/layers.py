"""Building blocks shared by the PAS-Net branches.

Everything works on channels-last arrays: NHWC for frames, NTHWC for clips.
The pooling functions reproduce Caffe's rounding (output size rounded up),
which the pretrained ECO and OpenPose weights were trained with; the batch
norm reproduces PyTorch's (unbiased running variance, momentum 0.1), so that
statistics updated here match those updated by the original training code.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def _caffe_padding(size: int, kernel: int, stride: int, pad: int) -> tuple[int, int]:
  """(low, high) padding that yields Caffe's ceil-mode output size."""
  out = math.ceil((size + 2 * pad - kernel) / stride) + 1
  # As Caffe and PyTorch do: the last window must start inside the input or
  # its left padding, otherwise it is dropped.
  if (out - 1) * stride >= size + pad:
    out -= 1
  high = max(0, (out - 1) * stride + kernel - size - pad)
  return pad, high


def _window_padding(x: jax.Array, kernel: int, stride: int, pad: int):
  (_, h, w, _) = x.shape
  return ((0, 0), _caffe_padding(h, kernel, stride, pad),
          _caffe_padding(w, kernel, stride, pad), (0, 0))


def max_pool_ceil(x: jax.Array, kernel: int, stride: int, pad: int = 0) -> jax.Array:
  """Max pooling over H and W of NHWC `x` with ceil-mode output size."""
  padding = _window_padding(x, kernel, stride, pad)
  return nn.max_pool(x, (kernel, kernel), (stride, stride), padding[1:3])


def avg_pool_ceil(x: jax.Array, kernel: int, stride: int, pad: int = 0) -> jax.Array:
  """Average pooling, ceil mode, zero padding counted in the divisor.

  The divisor counts the symmetric zero padding (as Caffe and PyTorch's
  count_include_pad do) but not the extra cells that ceil rounding adds.
  """
  padding = _window_padding(x, kernel, stride, pad)
  window, strides = (1, kernel, kernel, 1), (1, stride, stride, 1)
  # A Python scalar as initial value lets JAX recognise the sum and
  # differentiate it.
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, padding)
  (_, h, w, _) = x.shape
  ones = jnp.ones((1, h + 2 * pad, w + 2 * pad, 1), x.dtype)
  ceil_extra = [(0, 0)] + [(0, high - pad) for (_, high) in padding[1:3]] + [(0, 0)]
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides,
                                ceil_extra)
  return total / count


class BatchNorm(nn.Module):
  """Batch normalisation over the last axis, with PyTorch's conventions.

  Attributes:
    frozen: use the running statistics also when training and keep the scale
      and offset out of the gradient (ECO's frozen 2D BatchNorm layers).
    affine_trainable: whether scale and offset receive gradients when the
      layer is not frozen (ECO trains its 3D BatchNorm statistics but never
      their scale and offset).
    momentum: PyTorch convention, weight of the new batch's statistics.
    epsilon: added to the variance.
    dtype: dtype of the output; statistics are always computed in float32.
  """
  frozen: bool = False
  affine_trainable: bool = True
  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,),
                                 jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,),
                                jnp.float32)
    if self.frozen or not self.affine_trainable:
      scale, bias = jax.lax.stop_gradient(scale), jax.lax.stop_gradient(bias)

    x32 = x.astype(jnp.float32)
    if train and not self.frozen:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if not self.is_initializing():
        count = math.prod(x.shape[:-1])
        unbiased = var * (count / max(count - 1, 1))
        running_mean.value = ((1 - self.momentum) * running_mean.value +
                              self.momentum * jax.lax.stop_gradient(mean))
        running_var.value = ((1 - self.momentum) * running_var.value +
                             self.momentum * jax.lax.stop_gradient(unbiased))
    else:
      mean, var = running_mean.value, running_var.value
    multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
    y = x32 * multiplier + (bias - mean * multiplier)
    return y.astype(self.dtype)


def conv(x: jax.Array, features: int, kernel: int | Sequence[int], *, name: str,
         stride: int = 1, pad: int = 0, use_bias: bool = True,
         dtype: Dtype = jnp.float32) -> jax.Array:
  """A Caffe-style convolution (symmetric padding) over all spatial axes.

  Must be called inside a compact method: the convolution becomes a child
  of the calling module under `name`, so layer names stay flat and equal to
  the original networks' names.
  """
  spatial = x.ndim - 2
  kernel_size = (kernel,) * spatial if isinstance(kernel, int) else tuple(kernel)
  return nn.Conv(features, kernel_size, strides=(stride,) * spatial,
                 padding=[(pad, pad)] * spatial, use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, name=name)(x)


def bgr(frames: jax.Array) -> jax.Array:
  """Reverses the channel axis: RGB -> BGR, the order Caffe models expect."""
  return frames[..., ::-1]
