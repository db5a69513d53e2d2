"""OpenPose's 7 x 7 stage convolution, or its 3 x 3 ones, written several
ways, timed alone.

    python benchmarks/pose_conv.py                      # on a GPU: bf16, 512 and 128 frames
    .venv/bin/python benchmarks/pose_conv.py --frames=8,4 --dtypes=float32   # on a CPU
    .venv/bin/python benchmarks/pose_conv.py --forms=xla,fft --fft-sizes=12,14,16,20
    .venv/bin/python benchmarks/pose_conv.py --kernel=3 --frames=4 --forms=xla,winograd

On an H200, about 60 % of PAS-Net's training step (K = 16, batch 32, bf16,
pose frozen) goes to the 50 convolutions of 7 x 7 x 128 -> 128 (and 185 ->
128) in OpenPose's stages 2 to 6, which cuDNN runs with an Ampere kernel
(sm80 ..._indexed_...). This script times the same convolution written as:
  xla      - lax.conv_general_dilated, NHWC (what `layers.conv` does);
  matmuls  - the 7 column taps unrolled into the channels (7 x C of them,
             rows outermost), then one plain GEMM per row tap, summed in
             float32;
  patches  - lax.conv_general_dilated_patches (full im2col) and one matmul;
  fft<n>   - models/transform_conv.fft_conv: the FFT of n x n windows of the
             input (overlap-save, (n - 6)-square output tiles), one complex
             matrix product per frequency with the kernel's spectra prepared
             beforehand (the time of preparing them is printed apart), the
             inverse FFT; what the models run for frozen weights;
  fft<n>_in_call - the same with the spectra computed in the call;
  winograd - models/transform_conv.winograd_conv, F(4 x 4, 3 x 3) with the
             kernel's transform prepared beforehand (3 x 3 kernels only);
  winograd_in_call - the same with the transform computed in the call.
--shapes gives the layers as map side : C_in : C_out; by default the two 7 x 7
ones at 224 x 224 frames, or with --kernel=3 the 3 x 3 ones of OpenPose at 224,
46 x 46 (its maps at the 368-pixel frames OpenPose is usually run at) and
80 x 80 (conv2 at 160).
Each form is checked against `xla` (max abs difference over the output's
largest value) and reported in ms, TFLOP/s and as a fraction of a same-dtype
8192^3 (GPU) or 4096^3 (CPU) matmul measured in the run; TFLOP/s are
those of the direct convolution's FLOPs, so the FFT forms can pass the peak.
For trainable weights the model keeps `xla`, the fastest direct form on both
machines (docs/performance.md); for frozen ones, on a CPU, fft20 and, on maps
of at most 48 x 48, winograd (docs/transform_convolutions.md).
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from pasnet_jax import provenance  # noqa: E402
from pasnet_jax.models import transform_conv  # noqa: E402


def xla_conv(x, kernel):
  pad = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), [(pad, pad), (pad, pad)],
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def matmuls_conv(x, kernel):
  batch, height, width, channels = x.shape
  size, _, _, features = kernel.shape
  pad = size // 2
  rows = jnp.transpose(jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))), (1, 0, 2, 3))
  # Rows outermost, so that each row tap's operand is one contiguous matrix.
  columns = jnp.concatenate([rows[:, :, j:j + width] for j in range(size)], axis=-1)
  weights = kernel.reshape(size, size * channels, features)
  total = sum(jnp.dot(columns[i:i + height].reshape(-1, size * channels), weights[i],
                      preferred_element_type=jnp.float32) for i in range(size))
  return jnp.transpose(total.reshape(height, batch, width, features), (1, 0, 2, 3)
                       ).astype(x.dtype)


def patches_conv(x, kernel):
  size, _, channels, features = kernel.shape
  pad = size // 2
  cols = jax.lax.conv_general_dilated_patches(
      x, (size, size), (1, 1), [(pad, pad), (pad, pad)],
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  # Patches come out channel-major: (C, kh, kw) within the last axis.
  weights = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(channels * size * size, features)
  return jnp.dot(cols, weights, preferred_element_type=jnp.float32).astype(x.dtype)


def fft_forms(fft_size, kernel_size):
  """{name: (prepare(kernel), conv(x, prepared))} of the FFT forms."""
  spectra = lambda kernel: transform_conv.kernel_spectra(kernel, fft_size)
  conv = lambda x, prepared: transform_conv.fft_conv(
      x, prepared, kernel_size, fft_size).astype(x.dtype)
  return {f'fft{fft_size}': (jax.jit(spectra), conv),
          f'fft{fft_size}_in_call': (lambda kernel: kernel,
                                     lambda x, kernel: conv(x, spectra(kernel)))}


def winograd_forms():
  """{name: (prepare(kernel), conv(x, prepared))} of the Winograd forms."""
  conv = lambda x, prepared: transform_conv.winograd_conv(x, prepared).astype(x.dtype)
  return {'winograd': (jax.jit(transform_conv.winograd_kernels), conv),
          'winograd_in_call': (
              lambda kernel: kernel,
              lambda x, kernel: conv(x, transform_conv.winograd_kernels(kernel)))}


# {name: (prepare(kernel), conv(x, prepared))}; the direct forms take the kernel.
DIRECT_FORMS = {
    'xla': xla_conv,
    'matmuls': matmuls_conv,
    'patches': patches_conv,
}


def all_forms(fft_sizes, kernel_size):
  forms = {name: (lambda kernel: kernel, conv) for name, conv in DIRECT_FORMS.items()}
  for fft_size in fft_sizes:
    forms.update(fft_forms(fft_size, kernel_size))
  if kernel_size == transform_conv.WINOGRAD_KERNEL:
    forms.update(winograd_forms())
  return forms


# (map side, C_in, C_out) of the layers timed by default, per kernel size.
DEFAULT_SHAPES = {
    7: '28:128:128,28:185:128',
    3: ('224:64:64,112:128:128,80:128:128,56:128:256,56:256:256,46:256:256,'
        '46:512:512,28:512:512,28:128:128'),
}


def timed(fn, args, repeats):
  jax.block_until_ready(fn(*args))
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    seconds.append(time.perf_counter() - start)
  return float(np.median(seconds))


def matmul_tflops(dtype, size, repeats):
  a = jnp.ones((size, size), dtype)
  seconds = timed(jax.jit(jnp.dot), (a, a), repeats)
  return 2 * size ** 3 / seconds / 1e12


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  on_gpu = jax.default_backend() == 'gpu'
  parser.add_argument('--frames', default='512,128' if on_gpu else '8,4',
                      help='comma-separated frame counts (B x K)')
  parser.add_argument('--kernel', type=int, default=7, choices=(7, 3),
                      help='7: the stage convolutions; 3: the VGG-19 front and stage 1')
  parser.add_argument('--shapes', default=None,
                      help='comma-separated MAP:C_IN:C_OUT (default: DEFAULT_SHAPES of '
                      'the kernel; 7 x 7 at 224 has 28:128:128 for Mconv2-5, '
                      '28:185:128 for Mconv1)')
  parser.add_argument('--dtypes', default='bfloat16' if on_gpu else 'float32')
  parser.add_argument('--forms', default=None,
                      help='comma-separated names; "fft" stands for every fft<n>'
                      ' (default: all)')
  parser.add_argument('--fft-sizes', default=str(transform_conv.FFT_SIZE),
                      help='comma-separated FFT window sizes n of the fft<n> forms')
  parser.add_argument('--repeats', type=int, default=10 if on_gpu else 3,
                      help='calls per round (their median is the round\'s figure)')
  parser.add_argument('--rounds', type=int, default=3,
                      help='rounds over all forms, interleaved')
  parser.add_argument('--out', default=None, help='JSON path')
  args = parser.parse_args(argv)
  fft_sizes = [int(n) for n in args.fft_sizes.split(',')]
  forms = all_forms(fft_sizes, args.kernel)
  chosen = []
  for name in (args.forms.split(',') if args.forms else forms):
    chosen += [f'fft{n}' for n in fft_sizes] if name == 'fft' else [name]
  unknown = [name for name in chosen if name not in forms]
  if unknown:
    parser.error(f'--forms: {unknown} not among {sorted(forms)} for --kernel={args.kernel}')
  shapes = [tuple(map(int, shape.split(':')))
            for shape in (args.shapes or DEFAULT_SHAPES[args.kernel]).split(',')]

  results = {**provenance.git_state(REPO),
             'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
             'matmul_tflops': {}, 'rows': []}
  size = 8192 if on_gpu else 4096
  for dtype in args.dtypes.split(','):
    results['matmul_tflops'][dtype] = matmul_tflops(jnp.dtype(dtype), size, args.repeats)
    print(f"{results['device']}: {dtype} {size}^3 matmul "
          f"{results['matmul_tflops'][dtype]:.1f} TFLOP/s", flush=True)
  rng = np.random.default_rng(0)
  print(f"{'form':16s} {'dtype':9s} {'frames':>6s} {'map':>4s} {'C':>4s} {'out':>4s} "
        f"{'ms':>8s} {'TFLOP/s':>8s} {'% mm':>5s} {'max diff':>9s} {'prep ms':>8s} "
        f"{'load':>5s}")
  k = args.kernel
  for dtype in args.dtypes.split(','):
    for frames in map(int, args.frames.split(',')):
      for side, channels, features in shapes:
        label = f'{dtype:9s} {frames:6d} {side:4d} {channels:4d} {features:4d}'
        x = jnp.asarray(rng.standard_normal((frames, side, side, channels)), dtype)
        kernel = jnp.asarray(rng.standard_normal((k, k, channels, features))
                             / np.sqrt(k * k * channels), dtype)
        flops = 2 * frames * side * side * k * k * channels * features
        reference = np.asarray(jax.jit(xla_conv)(x, kernel), np.float32)
        scale = float(np.max(np.abs(reference)))
        # Every form is compiled and checked first, then timed in rounds
        # that visit the forms in turn, so that a change in the machine's
        # load falls on all of them; each form's figure is its median.
        ready = {}
        for form in chosen:
          prepare, conv = forms[form]
          fn = jax.jit(conv)
          try:
            prepare_seconds = timed(prepare, (kernel,), args.repeats)
            operand = prepare(kernel)
            output = np.asarray(fn(x, operand), np.float32)
          except Exception as error:  # noqa: BLE001 - e.g. out of memory; next form
            print(f'{form:16s} {label} failed: '
                  f'{type(error).__name__}: {str(error)[:200]}', flush=True)
            continue
          diff = float(np.max(np.abs(output - reference))) / scale
          ready[form] = (fn, operand, prepare_seconds, diff, [])
        for _ in range(args.rounds):
          for fn, operand, _, _, seconds in ready.values():
            seconds.append(timed(fn, (x, operand), args.repeats))
        for form, (_, _, prepare_seconds, diff, all_seconds) in ready.items():
          seconds = float(np.median(all_seconds))
          tflops = flops / seconds / 1e12
          row = {'form': form, 'dtype': dtype, 'frames': frames, 'kernel': k,
                 'map': side, 'in_channels': channels, 'out_channels': features,
                 'ms': seconds * 1e3, 'tflops': tflops,
                 'round_ms': [1e3 * t for t in all_seconds],
                 'matmul_fraction': tflops / results['matmul_tflops'][dtype],
                 'max_relative_difference': diff,
                 'prepare_ms': prepare_seconds * 1e3,
                 'loadavg_1min': os.getloadavg()[0]}
          results['rows'].append(row)
          print(f"{form:16s} {label} {seconds * 1e3:8.3f} "
                f"{tflops:8.3f} {100 * row['matmul_fraction']:5.0f} {diff:9.2e} "
                f"{prepare_seconds * 1e3:8.2f} {row['loadavg_1min']:5.1f}", flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
