"""Building blocks shared by the PAS-Net branches.

Everything works on channels-last arrays: NHWC for frames, NTHWC for clips.
The pooling functions reproduce Caffe's rounding (output size rounded up),
which the pretrained ECO and OpenPose weights were trained with; the batch
norm reproduces PyTorch's (unbiased running variance, momentum 0.1), so that
statistics updated here match those updated by the original training code.
"""

import functools
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
  """Max pooling over H and W of NHWC `x` with ceil-mode output size.

  The gradient goes to the first maximum of each window in row-major order,
  as in PyTorch and Caffe.
  """
  padding = tuple(_window_padding(x, kernel, stride, pad))
  return _max_pool(x, kernel, stride, padding)


def _window_taps(padded: jax.Array, kernel: int, stride: int, out_h: int, out_w: int):
  """(row, column, strided slice) for each of the window's kernel**2 taps."""
  for row in range(kernel):
    for column in range(kernel):
      yield row, column, padded[:, row:row + (out_h - 1) * stride + 1:stride,
                                column:column + (out_w - 1) * stride + 1:stride]


def _pooled_size(size: int, kernel: int, stride: int, padding) -> int:
  return (size + padding[0] + padding[1] - kernel) // stride + 1


# XLA:CPU differentiates reduce_window's max through select-and-scatter with
# index arrays, 7x slower than the maximum of strided slices and the masked
# scatter below (measured: 149 ms against 20 ms for the gradient of ECO's
# first pool, 8 x 112 x 112 x 64).
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x: jax.Array, kernel: int, stride: int, padding) -> jax.Array:
  return _max_pool_forward(x, kernel, stride, padding)[0]


def _max_pool_forward(x, kernel, stride, padding):
  padded = jnp.pad(x, padding, constant_values=-jnp.inf)
  out_h = _pooled_size(x.shape[1], kernel, stride, padding[1])
  out_w = _pooled_size(x.shape[2], kernel, stride, padding[2])
  pooled = None
  for _, _, tap in _window_taps(padded, kernel, stride, out_h, out_w):
    pooled = tap if pooled is None else jnp.maximum(pooled, tap)
  return pooled, (x, pooled)


def _max_pool_backward(kernel, stride, padding, residuals, grad):
  x, pooled = residuals
  padded = jnp.pad(x, padding, constant_values=-jnp.inf)
  out_h, out_w = pooled.shape[1:3]
  unclaimed = jnp.ones(pooled.shape, bool)
  grad_padded = jnp.zeros(padded.shape, grad.dtype)
  zero = jnp.zeros((), grad.dtype)
  for row, column, tap in _window_taps(padded, kernel, stride, out_h, out_w):
    first = unclaimed & (tap == pooled)
    unclaimed = unclaimed & ~first
    # The transpose of the strided slice: spread back with interior padding.
    grad_padded = grad_padded + jax.lax.pad(
        jnp.where(first, grad, zero), zero,
        ((0, 0, 0),
         (row, padded.shape[1] - row - (out_h - 1) * stride - 1, stride - 1),
         (column, padded.shape[2] - column - (out_w - 1) * stride - 1, stride - 1),
         (0, 0, 0)))
  (_, (top, _), (left, _), _) = padding
  return (grad_padded[:, top:top + x.shape[1], left:left + x.shape[2]],)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


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
      and offset out of the gradient (ECO's partial BN).
    momentum: PyTorch convention, weight of the new batch's statistics.
    epsilon: added to the variance.
    dtype: dtype of the output; statistics are always computed in float32.
  """
  frozen: bool = False
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
    if self.frozen:
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


# ECO-pytorch's partial BN: in training every BatchNorm but the first one,
# 2D and 3D alike, runs on its running statistics with scale and offset
# frozen. The authors' UCF-101 finetune turns it off ("trainable").
BN_POLICIES = ('trainable', 'partial', 'frozen')
FIRST_BN = 'conv1_7x7_s2_bn'


def batchnorm_frozen(bn_policy: str, name: str) -> bool:
  """Whether BatchNorm `name` of ECO is frozen under `bn_policy`.

  The one rule for the models and the optimizer's labels alike.
  """
  return bn_policy == 'frozen' or (bn_policy == 'partial' and name != FIRST_BN)


# XLA's CPU backend computes 3D convolutions, and above all their gradients,
# about half as fast as 2D ones (measured: 0.84 s against 0.38 s for one
# 3 x 3 x 3, 128-channel forward and backward pass at 16 x 28 x 28 on two
# cores), and on small maps up to 20x slower (benchmarks/conv3d.py). There
# "auto" takes one of two equivalent forms (the same result up to float
# rounding): "as_2d", a sum over the temporal taps of 2D convolutions with
# time folded into the batch, for layers with many output positions;
# "patches", one matrix product over the gathered 3 x 3 x 3 neighbourhoods
# (im2col), for the rest, where it measured up to 30x faster than "as_2d"
# (2 x 2 maps, where XLA's 2D convolution is slow too). Other backends run
# XLA's 3D convolution.
CONV3D_FORMS = ('auto', 'native', 'as_2d', 'patches')
# "auto" takes "patches" up to this many output positions (batch x frames
# x height x width) per layer: it won at 32 to 576 and lost at 1568 and more
# (benchmarks/results/conv3d_cpu.json). Its gathered input is 27x the
# layer's, at most 27 x 600 x 512 floats (33 MB) here.
PATCHES_MAX_POSITIONS = 600


class ConvParams(nn.Module):
  """The kernel and bias of an nn.Conv, declared but not applied.

  Same names, shapes, dtypes and initialisers as nn.Conv's, so a layer built
  from them has the variables (and initial values) nn.Conv would have.
  """
  features: int
  kernel_size: Sequence[int]
  use_bias: bool = True

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (*self.kernel_size, in_features, self.features),
                        jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros, (self.features,),
                       jnp.float32) if self.use_bias else None)
    return kernel, bias


def conv3d_as_2d(x: jax.Array, kernel: jax.Array, stride: int, pad: int
                 ) -> jax.Array:
  """NTHWC x (kT, kH, kW, I, O) -> NTHWC, as kT 2D convolutions summed."""
  batch, frames, height, width, channels = x.shape
  taps = kernel.shape[0]
  x = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0)))
  out_frames = (frames + 2 * pad - taps) // stride + 1
  total = None
  for tap in range(taps):
    # Frames tap, tap + stride, ... : the inputs this tap meets.
    frames_in = x[:, tap:tap + (out_frames - 1) * stride + 1:stride]
    y = jax.lax.conv_general_dilated(
        frames_in.reshape(batch * out_frames, height, width, channels),
        kernel[tap], (stride, stride), [(pad, pad), (pad, pad)],
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    total = y if total is None else total + y
  return total.reshape(batch, out_frames, *total.shape[1:])


def conv3d_patches(x: jax.Array, kernel: jax.Array, stride: int, pad: int
                   ) -> jax.Array:
  """NTHWC x (kT, kH, kW, I, O) -> NTHWC, as one matrix product of the
  gathered neighbourhoods (taps in the kernel's order) by the kernel."""
  batch = x.shape[0]
  taps = kernel.shape[:3]
  x = jnp.pad(x, ((0, 0), *[(pad, pad)] * 3, (0, 0)))
  out = [(size - tap) // stride + 1 for size, tap in zip(x.shape[1:4], taps)]
  gathered = jnp.concatenate(
      [x[:, t:t + (out[0] - 1) * stride + 1:stride,
         h:h + (out[1] - 1) * stride + 1:stride,
         w:w + (out[2] - 1) * stride + 1:stride]
       for t in range(taps[0]) for h in range(taps[1]) for w in range(taps[2])],
      axis=-1)
  y = gathered.reshape(-1, gathered.shape[-1]) @ kernel.reshape(-1, kernel.shape[-1])
  return y.reshape(batch, *out, kernel.shape[-1])


def conv3d_form(conv3d: str, x_shape: tuple[int, ...], kernel_size,
                stride: int, pad: int) -> str:
  """The form (CONV3D_FORMS but "auto") `conv3d` runs a 3D convolution in,
  for an NTHWC input of `x_shape`."""
  if conv3d != 'auto':
    return conv3d
  if jax.default_backend() != 'cpu':
    return 'native'
  positions = x_shape[0] * math.prod(
      (size + 2 * pad - tap) // stride + 1
      for size, tap in zip(x_shape[1:4], kernel_size))
  return 'patches' if positions <= PATCHES_MAX_POSITIONS else 'as_2d'


def conv(x: jax.Array, features: int, kernel: int | Sequence[int], *, name: str,
         stride: int = 1, pad: int = 0, use_bias: bool = True,
         dtype: Dtype = jnp.float32, conv3d: str = 'auto') -> jax.Array:
  """A Caffe-style convolution (symmetric padding) over all spatial axes.

  Must be called inside a compact method: the convolution becomes a child
  of the calling module under `name`, so layer names stay flat and equal to
  the original networks' names. `conv3d` picks the form of a 3D convolution
  (CONV3D_FORMS); both forms have the same variables.
  """
  spatial = x.ndim - 2
  kernel_size = (kernel,) * spatial if isinstance(kernel, int) else tuple(kernel)
  if spatial == 3 and (form := conv3d_form(conv3d, x.shape, kernel_size,
                                            stride, pad)) != 'native':
    weights, bias = ConvParams(features, kernel_size, use_bias, name=name)(
        x.shape[-1])
    compute = conv3d_as_2d if form == 'as_2d' else conv3d_patches
    y = compute(x.astype(dtype), weights.astype(dtype), stride, pad)
    return y if bias is None else y + bias.astype(dtype)
  return nn.Conv(features, kernel_size, strides=(stride,) * spatial,
                 padding=[(pad, pad)] * spatial, use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, name=name)(x)


def bgr(frames: jax.Array) -> jax.Array:
  """Reverses the channel axis: RGB -> BGR, the order Caffe models expect."""
  return frames[..., ::-1]
