"""Converts an ECO-pytorch checkpoint to Flax variables for PASNet.

    python -m convert.eco IN.pth.tar OUT_DIR [--num-classes N | --drop-classifier] [--force]

Reads the layouts people hold: the TSN wrapper's keys (`module.base_model.*`,
`module.new_fc.*`) inside a training checkpoint {'epoch', 'arch',
'state_dict', 'best_prec1'}, the same without `module.`, bare state dicts,
and Kinetics checkpoints whose classifier is `base_model.fc_final` (the
authors' ECO_Lite_rgb_model_Kinetics.pth.tar). Both ECO 3D layouts convert:
the authors' ("official": `res3a_2` on x_A, `res4a_down`/`res5a_down`, 3D
biases) and the early port's ("early": `res3a_1`, no shortcuts, no 3D
biases); the layout is read off the keys, printed, and recorded in
conversion.json as `eco_layout`.
OUT_DIR holds {"params": {"appearance", "spatiotemporal"[, "classifier"]},
"batch_stats": {"appearance", "spatiotemporal"}}, which
PASNet(num_classes, fusion="A").apply takes as it is, and which
convert.pasnet builds on for the other fusion styles.
"""

import argparse
from pathlib import Path

import torch
from torch import nn

from convert import torch_io
from convert.torch_io import ConversionError
from convert.torch_models import ECO

CLASSIFIER = 'new_fc'
KINETICS_CLASSIFIER = 'base_model.fc_final'
DATA_PARALLEL_PREFIX = 'module.'
# A layer only one layout has; the same markers as
# pasnet_jax.models.spatiotemporal.layout_of reads off converted weights.
LAYOUT_MARKERS = {'official': 'base_model.res4a_down.weight',
                  'early': 'base_model.res3a_1.weight'}
LAYOUT_SOURCES = {'official': "the ECO authors' release, mzolfaghari/ECO-pytorch",
                  'early': 'the early port, zhang-can/ECO-pytorch'}


def eco_layout(path, tensors):
  """"official" or "early": which 3D part the reference-keyed `tensors` hold.

  A file with neither marker layer is checked against the official layout,
  so that the error names what is missing.
  """
  found = [layout for layout, key in LAYOUT_MARKERS.items() if key in tensors]
  if len(found) > 1:
    raise ConversionError(
        f'{path}: holds layers of both ECO layouts ({LAYOUT_MARKERS["official"]} '
        f'and {LAYOUT_MARKERS["early"]}); it is not a checkpoint of either')
  return found[0] if found else 'official'


def reference_keys(path, tensors):
  """({reference key: key in the file}, `module.` or '', classifier layout).

  The reference keys are those of convert.torch_models.ECO: without
  DataParallel's `module.` and with a Kinetics `base_model.fc_final`
  classifier renamed to `new_fc`.
  """
  stripped = {key.removeprefix(DATA_PARALLEL_PREFIX): key for key in tensors}
  if len(stripped) < len(tensors):
    doubled = [
        key for key in tensors if key.startswith(DATA_PARALLEL_PREFIX) and
        key.removeprefix(DATA_PARALLEL_PREFIX) in tensors
    ]
    raise ConversionError(
        f'{path}: keys with and without module. hold the same '
        f'tensors: {torch_io.list_keys(doubled)}')
  has_new_fc = any(key.startswith(CLASSIFIER + '.') for key in stripped)
  originals = {}
  for key, original in stripped.items():
    if key.startswith(KINETICS_CLASSIFIER + '.') and not has_new_fc:
      key = CLASSIFIER + key.removeprefix(KINETICS_CLASSIFIER)
    originals[key] = original
  prefix = DATA_PARALLEL_PREFIX if any(
      key.startswith(DATA_PARALLEL_PREFIX) for key in tensors) else ''
  if has_new_fc:
    classifier = f'{prefix}{CLASSIFIER}.*'
  elif any(key.startswith(CLASSIFIER + '.') for key in originals):
    classifier = f'{prefix}{KINETICS_CLASSIFIER}.* (Kinetics)'
  else:
    classifier = 'none'
  return originals, prefix, classifier


def flax_layer_path(layer, module):
  """Where an ECO layer lives in PASNet's variables."""
  if layer == CLASSIFIER:
    return ('classifier',)
  name = layer.removeprefix('base_model.')
  if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
    return ('appearance', name)
  return ('spatiotemporal', name)


def convert_eco(path, num_classes=None, drop_classifier=False):
  """(variables, metadata, report) of an ECO checkpoint.

  The classifier is kept when it has `num_classes` rows (or whatever size
  when num_classes is None); a classifier of another size is dropped, never
  reshaped, and convert.pasnet initialises a new one.
  """
  report = torch_io.Report(source=str(path))
  tensors, container = torch_io.state_dict_of(path,
                                              torch_io.load_checkpoint(path))
  originals, prefix, classifier_layout = reference_keys(path, tensors)
  tensors = {
      reference: tensors[original] for reference, original in originals.items()
  }
  report.layout = f'{container}; keys {prefix}base_model.*, classifier {classifier_layout}'

  classifier_keys = [key for key in tensors if key.startswith(CLASSIFIER + '.')]
  weight = tensors.get(CLASSIFIER + '.weight')
  file_classes = weight.shape[
      0] if weight is not None and weight.ndim == 2 else None
  layout = eco_layout(path, tensors)
  report.layout += f'; ECO layout {layout} ({LAYOUT_SOURCES[layout]})'
  with torch.device('meta'):
    expected = torch_io.reference_tensors(ECO(file_classes or 1, layout=layout))
  if not any(key in expected for key in tensors if key not in classifier_keys):
    raise torch_io.other_network_error(path, list(originals.values()), 'ECO',
                                       '[module.]base_model.<layer>.*')
  keep_classifier = bool(classifier_keys)
  if classifier_keys and drop_classifier:
    keep_classifier = False
    report.dropped.append(
        (torch_io.list_keys(originals[k] for k in classifier_keys),
         'as --drop-classifier asks'))
  elif classifier_keys and num_classes is not None and file_classes != num_classes:
    keep_classifier = False
    report.dropped.append((torch_io.list_keys(
        originals[k] for k in classifier_keys
    ), f'classifier has {file_classes} classes, --num-classes asks for {num_classes}; '
                           'convert.pasnet initialises a new one'))
  if not classifier_keys:
    report.missing.append(('classifier', 'none in the file; convert.pasnet '
                           'initialises a new one'))

  if not keep_classifier:
    expected = {
        k: v for k, v in expected.items() if not k.startswith(CLASSIFIER + '.')
    }
  variables = torch_io.map_tensors(
      path,
      tensors,
      expected,
      flax_layer_path,
      display_key=lambda key: originals.get(key, prefix + key),
      report=report,
      report_group=lambda layer_path: layer_path[0])

  torch_io.report_num_batches_tracked(tensors, report)
  unused = [
      originals[key] for key in tensors if key not in expected and
      key not in classifier_keys and not key.endswith('.num_batches_tracked')
  ]
  if unused:
    report.dropped.append(
        (torch_io.list_keys(unused),
         'not a layer of ECO up to inception_3c and res3-res5'))

  kept_classes = file_classes if keep_classifier else None
  metadata = torch_io.source_metadata('convert.eco', path, report.layout,
                                      kept_classes)
  metadata['eco_layout'] = layout
  return variables, metadata, report


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m convert.eco',
      description='Convert an ECO-pytorch checkpoint (.pth.tar) to an Orbax '
      'checkpoint of PASNet variables (fusion "A").')
  parser.add_argument('checkpoint', type=Path, metavar='IN.pth.tar')
  parser.add_argument('out_dir', type=Path, metavar='OUT_DIR')
  classifier = parser.add_mutually_exclusive_group()
  classifier.add_argument(
      '--num-classes',
      type=torch_io.class_count,
      metavar='N',
      help='keep the classifier only if it has N classes')
  classifier.add_argument(
      '--drop-classifier', action='store_true', help='leave the classifier out')
  parser.add_argument(
      '--force', action='store_true', help='replace an existing OUT_DIR')
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  torch_io.check_out_dir(args.out_dir, args.force)
  variables, metadata, report = convert_eco(args.checkpoint, args.num_classes,
                                            args.drop_classifier)
  torch_io.write_and_report('convert.eco', variables, args.out_dir, metadata,
                            report, args.force)


if __name__ == '__main__':
  raise SystemExit(torch_io.run_cli(main))
