"""Convolutions of frozen weights as products of Fourier spectra.

OpenPose's fifty 7 x 7 stage convolutions are about two thirds of PAS-Net's
multiply-adds. With their weights frozen (inference, or training with the
pose branch frozen) each kernel's spectrum is computed once, by `prepare`,
and a convolution becomes: the FFT of the input's tiles, one complex matrix
product per frequency (tiles x C_in by C_in x C_out), and the inverse FFT.
At 224 x 224 that is 11x fewer multiply-adds than the direct convolution.

Tiling (overlap-save): every FFT_SIZE x FFT_SIZE window of the padded input
yields an (FFT_SIZE - k + 1)-square tile of the output, so a kernel's
spectrum has FFT_SIZE x (FFT_SIZE / 2 + 1) frequencies whatever the frame
size: the spectra's memory depends on the weights alone.

The spectra travel in the variable collection TRANSFORMS, beside `params`,
under the same layer names: `prepare(params)` -> {layer: {'spectra': ...}}.
See docs/transform_convolutions.md for when the models take this path.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

TRANSFORMS = 'transforms'
# The fastest of 12, 14, 16 and 20 for OpenPose's 28 x 28 stage maps at 224
# (benchmarks/pose_conv.py): 20 gives 14 x 14 output tiles, 2 x 2 of them
# per map; smaller windows mean more, smaller FFTs, which cost more than the
# matrix products they save.
FFT_SIZE = 20
# The kernels that go through the FFT: OpenPose's 3 x 3 layers ran 1.3x to
# 1.8x slower through it than directly (docs/transform_convolutions.md).
FFT_KERNEL = 7
# "auto" takes the FFT only where the output tiles cover at most this many
# times the map: OpenPose at 8 frames (throwaway script, interleaved, load
# 2.6 to 3.8) ran 1.6x, 1.4x and 1.9x faster through the FFT at 96, 160 and
# 224 (12, 20 and 28-pixel maps, covered 1.4, 2.0 and 1.0 times) and 1.05x
# to 1.07x slower at 64 and 128 (8 and 16-pixel maps, covered 3.1 times).
MAX_COVERAGE = 2.0
# prepare() leaves the spectra out (and the models then convolve directly)
# when they would take more than this; OpenPose's take 1.6 GB.
DEFAULT_MEMORY_LIMIT = 2 * 2**30


def num_frequencies(fft_size: int = FFT_SIZE) -> int:
  """Frequencies of a real FFT_SIZE x FFT_SIZE window's spectrum."""
  return fft_size * (fft_size // 2 + 1)


def coverage(height: int, width: int, kernel_size: int,
             fft_size: int = FFT_SIZE) -> float:
  """Area of the output tiles over that of the height x width map."""
  tile = fft_size - kernel_size + 1
  return (-(-height // tile) * tile) * (-(-width // tile) * tile) / (height * width)


def spectra_bytes(kernel_shape: tuple[int, ...], fft_size: int = FFT_SIZE) -> int:
  """Bytes of the complex64 spectra of a (k, k, C_in, C_out) kernel."""
  *_, in_features, out_features = kernel_shape
  return num_frequencies(fft_size) * in_features * out_features * 8


def kernel_spectra(kernel: jax.Array, fft_size: int = FFT_SIZE) -> jax.Array:
  """(k, k, C_in, C_out) kernel -> (frequencies, C_in, C_out) complex64.

  The conjugate of the zero-padded kernel's spectrum: multiplying by it
  correlates, as lax.conv (and Caffe, and PyTorch) do.
  """
  channels_first = jnp.transpose(kernel.astype(jnp.float32), (2, 3, 0, 1))
  spectrum = jnp.conj(jnp.fft.rfft2(channels_first, s=(fft_size, fft_size)))
  in_features, out_features = kernel.shape[2:]
  return jnp.transpose(spectrum, (2, 3, 0, 1)).reshape(
      num_frequencies(fft_size), in_features, out_features)


def fft_conv(x: jax.Array, spectra: jax.Array, kernel_size: int,
             fft_size: int = FFT_SIZE) -> jax.Array:
  """Stride-1 convolution of NHWC `x`, padded by kernel_size // 2 on each
  side, with the kernel whose `kernel_spectra` are given; float32 out."""
  batch, height, width, _ = x.shape
  tile = fft_size - kernel_size + 1
  pad = kernel_size // 2
  rows, columns = -(-height // tile), -(-width // tile)
  # Channels ahead of the spatial axes, which the FFT takes last.
  x = jnp.pad(jnp.transpose(x.astype(jnp.float32), (0, 3, 1, 2)),
              ((0, 0), (0, 0), (pad, pad + rows * tile - height),
               (pad, pad + columns * tile - width)))
  windows = jnp.stack([
      jnp.stack([x[:, :, r * tile:r * tile + fft_size,
                   c * tile:c * tile + fft_size] for c in range(columns)], 1)
      for r in range(rows)], 1)  # (N, rows, columns, C_in, n, n)
  tiles = batch * rows * columns
  in_features, out_features = spectra.shape[1:]
  spectrum = jnp.fft.rfft2(windows).reshape(tiles, in_features, -1)
  product = jax.lax.dot_general(
      jnp.transpose(spectrum, (2, 0, 1)), spectra,
      (((2,), (1,)), ((0,), (0,))))  # (frequencies, tiles, C_out)
  product = jnp.transpose(product, (1, 2, 0)).reshape(
      tiles, out_features, fft_size, fft_size // 2 + 1)
  # Overlap-save: the window's first `tile` rows and columns are the valid
  # (not wrapped-around) outputs.
  y = jnp.fft.irfft2(product, s=(fft_size, fft_size))[..., :tile, :tile]
  y = jnp.transpose(y.reshape(batch, rows, columns, out_features, tile, tile),
                    (0, 1, 4, 2, 5, 3))
  return y.reshape(batch, rows * tile, columns * tile, out_features
                   )[:, :height, :width]


class FFTConv(nn.Module):
  """A 'same' stride-1 convolution with nn.Conv's variables, through the FFT.

  Uses the `spectra` of collection TRANSFORMS when given (see `prepare`);
  otherwise computes them from the kernel in the call, which costs about as
  much as the direct convolution (benchmarks/pose_conv.py), so callers only
  take this path without prepared spectra when told to.
  """
  features: int
  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
    kernel = self.param('kernel', nn.initializers.lecun_normal(), shape,
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,),
                      jnp.float32)
    if self.has_variable(TRANSFORMS, 'spectra'):
      spectra = self.get_variable(TRANSFORMS, 'spectra')
    else:
      spectra = kernel_spectra(kernel)
    return (fft_conv(x, spectra, self.kernel_size) + bias).astype(self.dtype)


def prepare(params: Any, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> dict:
  """The TRANSFORMS collection for a network's `params`: {layer: {'spectra'}}
  for every FFT_KERNEL-square kernel, mirroring the params tree.

  Empty when the spectra would take more than `memory_limit` bytes; the
  models then run their direct convolutions.
  """
  flat = {path: value for path, value in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  kernels = {tuple(str(p.key) for p in path[:-1]): value
             for path, value in flat.items()
             if str(path[-1].key) == 'kernel' and value.ndim == 4
             and value.shape[:2] == (FFT_KERNEL, FFT_KERNEL)}
  if sum(spectra_bytes(k.shape) for k in kernels.values()) > memory_limit:
    return {}
  prepared = {}
  compute = jax.jit(kernel_spectra)
  for path, kernel in kernels.items():
    node = prepared
    for name in path:
      node = node.setdefault(name, {})
    node['spectra'] = compute(kernel)
  return prepared


def total_bytes(transforms: dict) -> int:
  """Bytes held by a TRANSFORMS collection."""
  return sum(math.prod(leaf.shape) * leaf.dtype.itemsize
             for leaf in jax.tree_util.tree_leaves(transforms))
