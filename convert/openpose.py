"""Converts the OpenPose body model (body_pose_model.pth) to Flax variables.

    python -m convert.openpose IN.pth OUT_DIR [--force]

Reads the flat Caffe names (`conv1_1.weight`, ..., `Mconv7_stage6_L2.bias`)
and the nested form some copies use (`model0.conv1_1.weight`, ...,
`model6_2.Mconv7_stage6_L2.bias`). OUT_DIR holds {"params": {layer:
{"kernel", "bias"}}}, which OpenPose().apply takes as it is and which
convert.pasnet places under "pose".
"""

import argparse
import re
from pathlib import Path

import torch

from convert import torch_io
from convert.torch_models import OpenPose
from pasnet_jax.errors import ConversionError

# pytorch-openpose's blocks: model0 (VGG front), model<stage>_<branch>.
NESTED_PREFIX = re.compile(r'^model\d+(_\d+)?\.')
STAGE_LAYER = re.compile(r'^(?:conv5_\d_CPM|Mconv\d_stage(\d))_L(\d)\.')


def nested_key(flat):
  """The nested form's key of a flat Caffe key (for messages)."""
  stage_layer = STAGE_LAYER.match(flat)
  if not stage_layer:
    return f'model0.{flat}'
  stage, branch = stage_layer.groups()
  return f'model{stage or 1}_{branch}.{flat}'


def reference_keys(path, tensors):
  """({flat Caffe key: key in the file}, description of the key layout)."""
  originals = {}
  for key in tensors:
    flat = NESTED_PREFIX.sub('', key)
    if flat in originals:
      raise ConversionError(
          f'{path}: keys {originals[flat]} and {key} hold the same tensor')
    originals[flat] = key
  nested = any(NESTED_PREFIX.match(key) for key in tensors)
  layout = ('nested keys model0.*, model1_1.* ... model6_2.*'
            if nested else 'flat Caffe keys conv1_1.* ... Mconv7_stage6_L2.*')
  return originals, layout


def convert_openpose(path):
  """(variables, metadata, report) of an OpenPose body model checkpoint."""
  report = torch_io.Report(source=str(path))
  tensors, container = torch_io.state_dict_of(path,
                                              torch_io.load_checkpoint(path))
  originals, key_layout = reference_keys(path, tensors)
  tensors = {flat: tensors[original] for flat, original in originals.items()}
  report.layout = f'{container}; {key_layout}'

  with torch.device('meta'):
    expected = torch_io.reference_tensors(OpenPose())
  if not any(key in tensors for key in expected):
    raise torch_io.other_network_error(path, list(originals.values()),
                                       'OpenPose',
                                       '<layer>.* or model<n>[_<b>].<layer>.*')
  nested = key_layout.startswith('nested')
  variables = torch_io.map_tensors(
      path,
      tensors,
      expected,
      lambda layer, module: (layer,),
      # A missing tensor is named as the file's other keys are spelt.
      display_key=lambda key: originals.get(key,
                                            nested_key(key) if nested else key),
      report=report,
      report_group=lambda layer_path: 'pose')
  unused = [originals[key] for key in tensors if key not in expected]
  if unused:
    report.dropped.append((torch_io.list_keys(unused),
                           'not a layer of the OpenPose COCO body model'))

  metadata = torch_io.source_metadata('convert.openpose', path,
                                      report.layout, None)
  return variables, metadata, report


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m convert.openpose',
      description='Convert the OpenPose body model (body_pose_model.pth) to an '
      'Orbax checkpoint of OpenPose variables.')
  parser.add_argument('checkpoint', type=Path, metavar='IN.pth')
  parser.add_argument('out_dir', type=Path, metavar='OUT_DIR')
  parser.add_argument(
      '--force', action='store_true', help='replace an existing OUT_DIR')
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  torch_io.check_out_dir(args.out_dir, args.force)
  variables, metadata, report = convert_openpose(args.checkpoint)
  torch_io.write_and_report('convert.openpose', variables, args.out_dir,
                            metadata, report, args.force)


if __name__ == '__main__':
  raise SystemExit(torch_io.run_cli(main))
