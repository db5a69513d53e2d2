"""ECO's 3 x 3 x 3 convolutions in each form `layers.conv` can run them.

    .venv/bin/python benchmarks/conv3d.py            # the default layer set
    .venv/bin/python benchmarks/conv3d.py --layers=8,1,2,512,512,1

Times the forward and backward pass (the gradient of a sum of squares with
respect to input and kernel, as in training) of one 3D convolution, padding
1, in the forms of layers.CONV3D_FORMS:
  native  - lax.conv_general_dilated over three spatial axes;
  as_2d   - layers.conv3d_as_2d, a sum over the 3 temporal taps of 2D
            convolutions;
  patches - layers.conv3d_patches, the gathered 3 x 3 x 3 neighbourhoods
            times the kernel, one matrix product;
and reports what "auto" picks for it (layers.PATCHES_MAX_POSITIONS). Each
form's output is checked against native (max abs difference over the
largest value). The default set is ECO's res3 to res5 layers at the demo's
64 x 64 frames (batch 8, K = 4, 8 x 8 maps) and at the paper's 224 x 224
(batch 1, K = 4 and 16), plus 12 x 12 maps (96 x 96 frames). Median of
--repeats calls after one untimed call; the load average is recorded.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from pasnet_jax import provenance  # noqa: E402
from pasnet_jax.models import layers  # noqa: E402
import pose_conv  # noqa: E402  (its `timed`, shared by both benchmarks)

# (batch, frames, side, in channels, out channels, stride) of the input.
DEFAULT_LAYERS = (
    # 64 x 64 frames, batch 8, K = 4 (the demo): res3, res4a, res4, res5a, res5
    (8, 4, 8, 96, 128, 1), (8, 4, 8, 128, 256, 2), (8, 2, 4, 256, 256, 1),
    (8, 2, 4, 256, 512, 2), (8, 1, 2, 512, 512, 1),
    # 96 x 96 frames, batch 8, K = 4
    (8, 4, 12, 128, 128, 1), (8, 4, 12, 128, 256, 2), (8, 2, 6, 256, 256, 1),
    (8, 1, 3, 512, 512, 1),
    # 224 x 224, batch 1, K = 4
    (1, 4, 28, 128, 128, 1), (1, 4, 28, 128, 256, 2), (1, 2, 14, 256, 256, 1),
    (1, 2, 14, 256, 512, 2), (1, 1, 7, 512, 512, 1),
    # 224 x 224, batch 1, K = 16
    (1, 16, 28, 128, 128, 1), (1, 16, 28, 128, 256, 2), (1, 8, 14, 256, 256, 1),
    (1, 8, 14, 256, 512, 2), (1, 4, 7, 512, 512, 1),
)
FORMS = {
    'native': lambda x, k, s: jax.lax.conv_general_dilated(
        x, k, (s,) * 3, [(1, 1)] * 3,
        dimension_numbers=('NTHWC', 'THWIO', 'NTHWC')),
    'as_2d': lambda x, k, s: layers.conv3d_as_2d(x, k, s, 1),
    'patches': lambda x, k, s: layers.conv3d_patches(x, k, s, 1),
}


def time_layer(shape, repeats: int) -> dict:
  batch, frames, side, channels, features, stride = shape
  x = jax.random.normal(jax.random.key(0), (batch, frames, side, side, channels))
  kernel = 0.01 * jax.random.normal(jax.random.key(1),
                                    (3, 3, 3, channels, features))
  reference = FORMS['native'](x, kernel, stride)
  row = {'shape': dict(zip(('batch', 'frames', 'side', 'in', 'out', 'stride'),
                           shape)),
         'positions': int(np.prod(reference.shape[:4])),
         'auto': layers.conv3d_form('auto', x.shape, (3, 3, 3), stride, 1),
         'loadavg_1min_before': os.getloadavg()[0]}
  for name, form in FORMS.items():
    grad = jax.jit(jax.grad(
        lambda x, k, form=form: jnp.sum(form(x, k, stride) ** 2), argnums=(0, 1)))
    row[f'{name}_ms'] = pose_conv.timed(grad, (x, kernel), repeats) * 1000
    row[f'{name}_error'] = float(jnp.max(jnp.abs(form(x, kernel, stride) -
                                                 reference))
                                 / jnp.max(jnp.abs(reference)))
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--layers', default='',
                      help='space-separated batch,frames,side,in,out,stride')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--out', default=os.path.join(
      os.path.dirname(__file__), 'results', f'conv3d_{jax.default_backend()}.json'))
  args = parser.parse_args()
  shapes = ([tuple(int(v) for v in layer.split(',')) for layer in args.layers.split()]
            or DEFAULT_LAYERS)
  rows = []
  print(f'{"layer":<34} {"positions":>9} {"native":>8} {"as_2d":>8} '
        f'{"patches":>8}  auto     (ms, forward and backward)')
  for shape in shapes:
    row = time_layer(shape, args.repeats)
    rows.append(row)
    batch, frames, side, channels, features, stride = shape
    print(f'B{batch} T{frames} {side}x{side} {channels}->{features} s{stride}'
          .ljust(34) + f' {row["positions"]:>9} {row["native_ms"]:>8.1f} '
          f'{row["as_2d_ms"]:>8.1f} {row["patches_ms"]:>8.1f}  {row["auto"]}',
          flush=True)
  results = {'environment': {'date': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
                             'jax': jax.__version__,
                             'backend': jax.default_backend(),
                             'cpu_count': os.cpu_count(),
                             **provenance.git_state(os.path.dirname(os.path.abspath(__file__)))},
             'repeats': args.repeats, 'rows': rows}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(results, f, indent=1)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
