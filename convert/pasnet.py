"""Assembles a full PASNet initialisation from converted ECO and OpenPose.

    python -m convert.pasnet --eco ECO_OUT [--openpose OPENPOSE_OUT] --fusion NAME \\
        --num-classes N OUT_DIR [--seed S] [--force]

ECO_OUT and OPENPOSE_OUT are outputs of convert.eco and convert.openpose.
The structure comes from PASNet(N, fusion=NAME).init, and so do the parts
neither checkpoint provides: a classifier of another size (or none), the
fusion conv of the conv(...) styles (initialised to pass x_A through), and
for style "I" the first 3D conv, which takes 128 channels instead of ECO's 96.
OUT_DIR holds {"params", "batch_stats"} that PASNet(N, fusion=NAME).apply
takes as it is.
"""

import argparse
from pathlib import Path

from convert import torch_io
from convert.torch_io import ConversionError

ECO_PARTS = ('appearance', 'spatiotemporal', 'classifier')
POSE_PART = 'pose'
INIT_SIZE = 32  # the smallest frame PASNet takes; init needs shapes only


def initializer(fusion, num_classes, seed, eco_layout):
  """(shapes of PASNet's variables, function computing some of their initial values).

  Only the leaves neither checkpoint provides need values; jitting an init
  that returns just those lets XLA drop the rest (85M random numbers, and
  eager init would compile every initializer separately).
  """
  import functools

  import jax
  import numpy as np
  from flax import traverse_util

  from pasnet_jax.models.pasnet import PASNet

  model = PASNet(num_classes, fusion=fusion, eco_layout=eco_layout)
  video = np.zeros((1, 1, INIT_SIZE, INIT_SIZE, 3), np.float32)
  init = functools.partial(model.init, jax.random.key(seed), video, train=False)

  def initial_values(keys):
    values = jax.jit(
        lambda: [traverse_util.flatten_dict(init())[k] for k in keys])()
    return dict(zip(keys, (np.asarray(value) for value in values)))

  return traverse_util.flatten_dict(jax.eval_shape(init)), initial_values


def source_of(key):
  """(network that provides a PASNet leaf, its key in that network's tree)."""
  collection, part, *rest = key
  if part in ECO_PARTS:
    return 'ECO', key
  if part == POSE_PART:
    return 'OpenPose', (collection, *rest)
  return None, None


def assemble(shapes, initial_values, eco, openpose, fusion, directories,
             report, first_3d_conv):
  """PASNet variables: every leaf that ECO or OpenPose has, the rest from init.

  shapes: {flattened key: abstract leaf} of PASNet's variables.
  initial_values(keys) -> {key: PASNet.init's value} for the leaves left.
  Leaves that only a new class count or fusion style changes (the
  classifier, style I's `first_3d_conv`) are initialised anew when their shapes
  differ; any other missing or misshapen leaf means a broken directory.
  """
  from flax import traverse_util

  flat = {
      'ECO':
          traverse_util.flatten_dict(eco),
      'OpenPose':
          traverse_util.flatten_dict(openpose) if openpose is not None else {}
  }
  num_classes = shapes[('params', 'classifier', 'bias')].shape[0]
  assembled, used = {}, set()
  new, missing, misshapen = {}, [], []
  for key, abstract in shapes.items():
    part, layer = key[1], '/'.join(key[1:-1])
    network, source_key = source_of(key)
    source = flat.get(network, {}).get(source_key)
    if network is None:
      new.setdefault(layer, "PASNet.init's pass-through of x_A")
    elif source is None and part == 'classifier':
      new.setdefault(layer, 'ECO_OUT has no classifier; PASNet.init')
    elif source is None:
      missing.append((network, '/'.join(key)))
    elif source.shape == abstract.shape:
      used.add((network, source_key))
      assembled[key] = source
      report.mapped[part] = report.mapped.get(part, 0) + 1
    elif part == 'classifier':
      new.setdefault(
          layer, f"ECO_OUT's classifier has {source.shape[-1]} classes, "
          f'{num_classes} asked for; PASNet.init')
    elif fusion == 'I' and key[2] == first_3d_conv:
      new.setdefault(
          layer, f'fusion I feeds it {abstract.shape[-2]} channels, '
          f"ECO's takes {source.shape[-2]}; PASNet.init")
    else:
      misshapen.append((network, f"{'/'.join(key)} {source.shape} "
                        f'(expected {abstract.shape})'))
  for problems, what, limit in ((missing, 'missing tensors', 4),
                                (misshapen, 'tensors of the wrong shape:', 3)):
    if problems:
      network = problems[0][0]
      names = [name for source, name in problems if source == network]
      raise ConversionError(f'{directories[network]}: {what} '
                            f'{torch_io.list_keys(names, limit)}')

  new_keys = [key for key in shapes if key not in assembled]
  assembled.update(initial_values(new_keys))
  for layer, why in new.items():
    report.new.append((layer, why))
  for network, leaves in flat.items():
    unused = {}
    for key in leaves:
      if (network, key) in used:
        continue
      # A replaced layer is named; a part the style does without, whole.
      layer = '/'.join(key[1:-1]) if network == 'ECO' else POSE_PART
      group = layer if layer in new else layer.split('/')[0]
      unused[group] = unused.get(group, 0) + 1
    for group, count in unused.items():
      why = ('replaced, see new'
             if group in new else f'fusion {fusion} has no use for it')
      report.dropped.append((f'{network} {group} ({count} tensors)', why))
  return traverse_util.unflatten_dict(assembled)


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
  from pasnet_jax.models import spatiotemporal

  args = parse_args(argv)
  torch_io.check_out_dir(args.out_dir, args.force)
  needs_pose = args.fusion != 'A'
  if needs_pose and args.openpose is None:
    raise ConversionError(
        f'fusion {args.fusion} needs the pose branch: pass '
        '--openpose OPENPOSE_OUT (an output of convert.openpose)')
  eco, eco_metadata = torch_io.read_converted(args.eco, 'convert.eco')
  openpose, openpose_metadata = None, None
  if args.openpose is not None:
    openpose, openpose_metadata = torch_io.read_converted(
        args.openpose, 'convert.openpose')

  report = torch_io.Report(source=f'{args.eco} + {args.openpose}' if args
                           .openpose else str(args.eco))
  layout = spatiotemporal.layout_of(eco.get('params', {}).get('spatiotemporal', {}))
  if layout is None:
    raise ConversionError(f'{args.eco}: holds no ECO 3D part of either layout '
                          '(res4a_down or res3a_1); convert it again with '
                          'convert.eco')
  report.layout = (f'fusion {args.fusion}, {args.num_classes} classes, '
                   f'ECO layout {layout}')
  shapes, initial_values = initializer(args.fusion, args.num_classes, args.seed,
                                       layout)
  variables = assemble(shapes, initial_values, eco, openpose, args.fusion, {
      'ECO': args.eco,
      'OpenPose': args.openpose
  }, report, spatiotemporal.first_conv(layout))
  metadata = {
      'converter':
          'convert.pasnet',
      'fusion':
          args.fusion,
      'num_classes':
          args.num_classes,
      'eco_layout':
          layout,
      'seed':
          args.seed,
      'eco': {
          'directory': str(args.eco.absolute()),
          **eco_metadata
      },
      'openpose': ({
          'directory': str(args.openpose.absolute()),
          **openpose_metadata
      } if openpose_metadata else None),
  }
  torch_io.write_and_report('convert.pasnet', variables, args.out_dir,
                            metadata, report, args.force)


if __name__ == '__main__':
  raise SystemExit(torch_io.run_cli(main))
