"""Convolutions of frozen weights through kernel transforms made once.

OpenPose's fifty 7 x 7 stage convolutions are about two thirds of PAS-Net's
multiply-adds and its eighteen 3 x 3 ones about a third. With their weights
frozen (inference, or training with the pose branch frozen) each kernel's
transform is computed once, by `prepare`, and a convolution becomes:
transform the input's tiles, one matrix product per transform coefficient
(tiles x C_in by C_in x C_out), transform back.

- 7 x 7: Fourier spectra. At 224 x 224, 11x fewer multiply-adds than the
  direct convolution.
- 3 x 3: Winograd's minimal filtering F(4 x 4, 3 x 3) (Lavin and Gray,
  "Fast Algorithms for Convolutional Neural Networks", 2016): 36 products
  per 4 x 4 output tile against 144, 4x fewer.

Tiling: every FFT_SIZE x FFT_SIZE window of the padded input yields an
(FFT_SIZE - k + 1)-square tile of the output (overlap-save), every 6 x 6 one
a 4 x 4 tile for Winograd, so a kernel's transform has a fixed number of
coefficients whatever the frame size: its memory depends on the weights
alone.

The transforms travel in the variable collection TRANSFORMS, beside
`params`, under the same layer names: `prepare(params)` -> {layer:
{'spectra': ...}} for 7 x 7 kernels, {layer: {'winograd': ...}} for 3 x 3.
See docs/transform_convolutions.md for when the models take these paths.
"""

import functools
import math
import operator
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
# Winograd F(4 x 4, 3 x 3) with the interpolation points 0, 1, -1, 2, -2
# and infinity: input (6 x 6 tile), kernel and output transforms. These small
# points keep float32 within about 2e-5 of the largest output per layer
# (tests/test_transform_conv.py).
WINOGRAD_KERNEL = 3
WINOGRAD_TILE = 4
WINOGRAD_WINDOW = WINOGRAD_TILE + WINOGRAD_KERNEL - 1
WINOGRAD_INPUT = np.array([[4, 0, -5, 0, 1, 0],
                           [0, -4, -4, 1, 1, 0],
                           [0, 4, -4, -1, 1, 0],
                           [0, -2, -1, 2, 1, 0],
                           [0, 2, -1, -2, 1, 0],
                           [0, 4, 0, -5, 0, 1]], np.float32)
WINOGRAD_FILTER = np.array([[1 / 4, 0, 0],
                            [-1 / 6, -1 / 6, -1 / 6],
                            [-1 / 6, 1 / 6, -1 / 6],
                            [1 / 24, 1 / 12, 1 / 6],
                            [1 / 24, -1 / 12, 1 / 6],
                            [0, 0, 1]], np.float32)
WINOGRAD_OUTPUT = np.array([[1, 1, 1, 1, 1, 0],
                            [0, 1, -1, 2, -2, 0],
                            [0, 1, 1, 4, 4, 0],
                            [0, 1, -1, 8, -8, 1]], np.float32)
# "auto" takes Winograd on maps of at most WINOGRAD_MAX_POSITIONS, and of at
# most WINOGRAD_WIDE_MAX_POSITIONS for layers of at least
# WINOGRAD_WIDE_CHANNELS input channels. Against lax.conv at 4 and 8 frames
# (benchmarks/pose_conv.py --kernel=3, results/pose_conv3_cpu.json) it ran
# as fast to 2.5x faster on OpenPose's 28 x 28 and 46 x 46 layers, 1.15x to
# 1.2x faster at 56 x 56 x 256, tied at 56 x 56 with 128 channels in at 8
# frames (and at 4 in an earlier run; 2x faster in that file's), and 1.05x
# to 1.75x slower at 80 x 80 and more: its transforms are elementwise
# passes over 2.25x the map, which the matrix products must outweigh.
WINOGRAD_MAX_POSITIONS = 48 * 48
WINOGRAD_WIDE_MAX_POSITIONS = 56 * 56
WINOGRAD_WIDE_CHANNELS = 256
# The kernel sizes that have a transform.
TRANSFORM_KERNELS = (FFT_KERNEL, WINOGRAD_KERNEL)
# prepare() leaves the transforms out (and the models then convolve
# directly) when they would take more than this; OpenPose's spectra take
# 1.57 GB and its Winograd kernels 0.13 GB.
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


# fft_conv and winograd_conv are jitted on their own so that a model's jaxpr
# names each convolution it runs through a transform.
@functools.partial(jax.jit, static_argnums=(2, 3))
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


def winograd_bytes(kernel_shape: tuple[int, ...]) -> int:
  """Bytes of the float32 Winograd transform of a (3, 3, C_in, C_out) kernel."""
  *_, in_features, out_features = kernel_shape
  return WINOGRAD_WINDOW**2 * in_features * out_features * 4


def winograd_kernels(kernel: jax.Array) -> jax.Array:
  """(3, 3, C_in, C_out) kernel -> (36, C_in, C_out) float32: G k G^T."""
  transformed = jnp.einsum('ak,klio,bl->abio', WINOGRAD_FILTER,
                           kernel.astype(jnp.float32), WINOGRAD_FILTER,
                           precision=jax.lax.Precision.HIGHEST)
  return transformed.reshape(WINOGRAD_WINDOW**2, *kernel.shape[2:])


def _combine(matrix: np.ndarray, parts: Sequence[jax.Array]) -> list[jax.Array]:
  """[sum_j matrix[i, j] * parts[j] for each row i], zero terms left out:
  the transforms' matrices are small and mostly 0 and +-1."""
  rows = []
  for row in matrix:
    terms = [part if c == 1 else -part if c == -1 else float(c) * part
             for c, part in zip(row, parts) if c != 0]
    rows.append(functools.reduce(operator.add, terms))
  return rows


def _windows(x: jax.Array, axis: int, count: int) -> list[jax.Array]:
  """For each offset in a Winograd input window, the `count` elements at
  that offset of the windows (stride WINOGRAD_TILE) along `axis`."""
  return [jax.lax.slice_in_dim(x, offset, offset + (count - 1) * WINOGRAD_TILE + 1,
                               stride=WINOGRAD_TILE, axis=axis)
          for offset in range(WINOGRAD_WINDOW)]


@jax.jit
def winograd_conv(x: jax.Array, transformed: jax.Array) -> jax.Array:
  """Stride-1 3 x 3 convolution of NHWC `x`, padded by 1 on each side, with
  the kernel whose `winograd_kernels` are given; float32 out."""
  batch, height, width, in_features = x.shape
  out_features = transformed.shape[-1]
  rows, columns = -(-height // WINOGRAD_TILE), -(-width // WINOGRAD_TILE)
  x = jnp.pad(x.astype(jnp.float32),
              ((0, 0), (1, rows * WINOGRAD_TILE + 1 - height),
               (1, columns * WINOGRAD_TILE + 1 - width), (0, 0)))
  # B^T d B, one axis at a time: (6, 6, N, rows, columns, C_in).
  by_rows = jnp.stack(_combine(WINOGRAD_INPUT, _windows(x, 1, rows)))
  tiles = jnp.stack(_combine(WINOGRAD_INPUT, _windows(by_rows, 3, columns)), 1)
  products = jax.lax.dot_general(
      tiles.reshape(WINOGRAD_WINDOW**2, -1, in_features), transformed,
      (((2,), (1,)), ((0,), (0,))), precision=jax.lax.Precision.HIGHEST)
  products = products.reshape(WINOGRAD_WINDOW, WINOGRAD_WINDOW, batch, rows,
                              columns, out_features)
  # A^T m A, one axis at a time, into (N, rows, 4, columns, 4, C_out).
  by_rows = _combine(WINOGRAD_OUTPUT, list(products))
  y = jnp.stack([jnp.stack(_combine(WINOGRAD_OUTPUT, list(row)), 3)
                 for row in by_rows], 2)
  return y.reshape(batch, rows * WINOGRAD_TILE, columns * WINOGRAD_TILE,
                   out_features)[:, :height, :width]


# Per kernel size: (the name of its transform in TRANSFORMS, the function
# that makes it from the kernel, its bytes from the kernel's shape).
_TRANSFORMS = {
    FFT_KERNEL: ('spectra', kernel_spectra, spectra_bytes),
    WINOGRAD_KERNEL: ('winograd', winograd_kernels, winograd_bytes),
}


class TransformConv(nn.Module):
  """A 'same' stride-1 convolution with nn.Conv's variables, through a
  kernel transform: the FFT for 7 x 7 kernels, Winograd for 3 x 3.

  Uses the transform of collection TRANSFORMS when given (see `prepare`);
  otherwise computes it from the kernel in the call, which for the FFT costs
  about as much as the direct convolution (benchmarks/pose_conv.py), so
  callers only take this path without prepared transforms when told to.
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
    name, make, _ = _TRANSFORMS[self.kernel_size]
    if self.has_variable(TRANSFORMS, name):
      transform = self.get_variable(TRANSFORMS, name)
    else:
      transform = make(kernel)
    if self.kernel_size == FFT_KERNEL:
      y = fft_conv(x, transform, self.kernel_size)
    else:
      y = winograd_conv(x, transform)
    return (y + bias).astype(self.dtype)


def prepare(params: Any, memory_limit: int = DEFAULT_MEMORY_LIMIT,
            kernel_sizes: Sequence[int] = TRANSFORM_KERNELS) -> dict:
  """The TRANSFORMS collection for a network's `params`: {layer: {'spectra'}}
  for every 7 x 7 kernel and {layer: {'winograd'}} for every 3 x 3 one whose
  size is in `kernel_sizes`, mirroring the params tree.

  Empty when they would take more than `memory_limit` bytes; the models then
  run their direct convolutions.
  """
  flat = {path: value for path, value in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  kernels = {tuple(str(p.key) for p in path[:-1]): value
             for path, value in flat.items()
             if str(path[-1].key) == 'kernel' and value.ndim == 4
             and value.shape[0] == value.shape[1]
             and value.shape[0] in kernel_sizes}
  if sum(_TRANSFORMS[k.shape[0]][2](k.shape)
         for k in kernels.values()) > memory_limit:
    return {}
  compute = {size: jax.jit(make) for size, (_, make, _) in _TRANSFORMS.items()}
  prepared = {}
  for path, kernel in kernels.items():
    node = prepared
    for name in path:
      node = node.setdefault(name, {})
    node[_TRANSFORMS[kernel.shape[0]][0]] = compute[kernel.shape[0]](kernel)
  return prepared


def total_bytes(transforms: dict) -> int:
  """Bytes held by a TRANSFORMS collection."""
  return sum(math.prod(leaf.shape) * leaf.dtype.itemsize
             for leaf in jax.tree_util.tree_leaves(transforms))
