"""Assembles a full PASNet initialisation from converted ECO and OpenPose.

    python -m convert.pasnet --eco ECO_OUT [--openpose OPENPOSE_OUT] --fusion NAME \\
        --num-classes N OUT_DIR [--seed S] [--force]

ECO_OUT and OPENPOSE_OUT are outputs of convert.eco and convert.openpose.
The weights are combined by the rule training uses (pasnet_jax.initial_weights):
a tensor that does not fit is an error, except a classifier of another
size and style I's first 3D convolution, drawn fresh like the conv styles'
fusion layer; the ECO layout is ECO_OUT's. OUT_DIR holds {"params",
"batch_stats"} that PASNet(N, fusion=NAME, eco_layout=...).apply takes as
it is.
"""

import argparse
from pathlib import Path

from convert import torch_io
from convert.torch_io import ConversionError

INIT_SIZE = 32  # the smallest frame PASNet takes; the initialiser needs shapes only


def parse_args(argv):
  from pasnet_jax.models.fusion import STYLES

  parser = argparse.ArgumentParser(
      prog='python -m convert.pasnet',
      description='Assemble PASNet variables from the outputs of convert.eco '
      'and convert.openpose.')
  parser.add_argument(
      '--eco',
      type=Path,
      required=True,
      metavar='ECO_OUT',
      help='output directory of convert.eco')
  parser.add_argument(
      '--openpose',
      type=Path,
      metavar='OPENPOSE_OUT',
      help='output directory of convert.openpose (not needed for fusion A)')
  parser.add_argument(
      '--fusion',
      required=True,
      choices=STYLES,
      metavar='NAME',
      help='fusion style (Table II): ' + ', '.join(STYLES))
  parser.add_argument(
      '--num-classes', type=torch_io.class_count, required=True, metavar='N')
  parser.add_argument(
      '--seed',
      type=int,
      default=0,
      help='seed of the parts initialised anew (default 0)')
  parser.add_argument(
      '--force', action='store_true', help='replace an existing OUT_DIR')
  parser.add_argument('out_dir', type=Path, metavar='OUT_DIR')
  return parser.parse_args(argv)


def main(argv=None):
  from pasnet_jax import initial_weights
  from pasnet_jax.errors import CheckpointError
  from pasnet_jax.models.pasnet import PASNet, init_variables

  args = parse_args(argv)
  torch_io.check_out_dir(args.out_dir, args.force)
  if args.fusion != 'A' and args.openpose is None:
    raise ConversionError(
        f'fusion {args.fusion} needs the pose branch: pass '
        '--openpose OPENPOSE_OUT (an output of convert.openpose)')
  eco, eco_metadata = torch_io.read_converted(args.eco, 'convert.eco')
  sources = [initial_weights.Source(f'ECO_OUT {args.eco}', eco)]
  openpose_metadata = None
  if args.openpose is not None:
    openpose, openpose_metadata = torch_io.read_converted(
        args.openpose, 'convert.openpose')
    sources.append(initial_weights.pose_source(f'OPENPOSE_OUT {args.openpose}',
                                               openpose))
  layout = initial_weights.eco_layout(sources, None)
  if layout is None:
    raise ConversionError(f'{args.eco}: holds no ECO 3D part of either layout '
                          '(res4a_down or res3a_1); convert it again with '
                          'convert.eco')
  model = PASNet(args.num_classes, fusion=args.fusion, eco_layout=layout)
  fresh = init_variables(model, args.seed, (1, 1, INIT_SIZE, INIT_SIZE, 3))
  try:
    variables, combined = initial_weights.combine(fresh, sources, model)
  except CheckpointError as error:
    raise ConversionError(str(error)) from None

  report = torch_io.Report(source=' + '.join(s.description for s in sources))
  report.layout = (f'fusion {args.fusion}, {args.num_classes} classes, '
                   f'ECO layout {layout}')
  for (_, part), count in combined.loaded.items():
    report.mapped[part] = report.mapped.get(part, 0) + count
  report.new = list(combined.new.items())
  report.dropped = [(f'{source} {part} ({count} tensors)', why)
                    for (source, part), (count, why) in combined.left_out.items()]
  metadata = {
      'converter': 'convert.pasnet',
      'fusion': args.fusion,
      'num_classes': args.num_classes,
      'eco_layout': layout,
      'seed': args.seed,
      'eco': {'directory': str(args.eco.absolute()), **eco_metadata},
      'openpose': ({'directory': str(args.openpose.absolute()),
                    **openpose_metadata} if openpose_metadata else None),
  }
  torch_io.write_and_report('convert.pasnet', variables, args.out_dir,
                            metadata, report, args.force)


if __name__ == '__main__':
  raise SystemExit(torch_io.run_cli(main))
