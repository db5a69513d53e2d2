"""What the converters share: safe loading of PyTorch checkpoints, mapping
their tensors onto the Flax variable trees, the conversion report, and an
atomic Orbax writer.

Every failure a user can cause (a missing, truncated or foreign file, the
other network's checkpoint, a missing or misshapen tensor, an existing
output directory) raises ConversionError with one line naming the file and
the keys involved; `run_cli` prints it and exits with status 2, and nothing
is written.
"""

import dataclasses
import hashlib
import json
import os
import pickle
import re
import shutil
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pasnet_jax.errors import ConversionError

# Written inside OUT_DIR, beside Orbax's files; restore() ignores it.
METADATA_FILE = 'conversion.json'
EXIT_BAD_INPUT = 2
# Names that only one of the two networks has, to recognise the other one.
NETWORK_SIGNATURES = {
    'ECO':
        re.compile(
            r'(^|\.)(conv1_7x7_s2|inception_3[abc]_\w+|res[345][ab]_\w+)\.'),
    'OpenPose':
        re.compile(r'(^|\.)(conv1_1|conv5_\d_CPM_L[12]|Mconv\d_stage\d_L[12])\.'
                  ),
}
CONVERTERS = {'ECO': 'convert.eco', 'OpenPose': 'convert.openpose'}


def list_keys(keys, limit=4):
  """'a, b, c and 5 more': a short, readable list for one-line messages."""
  keys = list(keys)
  shown = ', '.join(keys[:limit])
  return shown + (f' and {len(keys) - limit} more' if len(keys) > limit else '')


def first_sentence(error):
  """An exception's message cut to its first sentence, for one-line errors."""
  return re.split(r'\. |\n| \[', str(error).strip())[0]


# ---------------------------------------------------------------- loading


def weights_only_refusal(path, message):
  """The error for a file torch.load(weights_only=True) would not rebuild."""
  global_name = re.search(r'GLOBAL ([\w.]+)', message)
  if global_name:
    return ConversionError(
        f'{path}: refused: loading it would call {global_name.group(1)}, which could '
        'run code; nothing in it was run')
  detail = re.search(r'WeightsUnpickler error: *\n*([^\n]+)', message)
  return ConversionError(
      f'{path}: refused, not a PyTorch weights file '
      f'({detail.group(1).strip() if detail else first_sentence(message)}); '
      'nothing in it was run')


def load_checkpoint(path):
  """Loads a PyTorch file without running any code it might carry.

  torch.load(weights_only=True) only rebuilds tensors and plain containers;
  a pickle that asks for anything else (a function such as os.system, a
  class) is refused before it is called.
  """
  path = Path(path)
  if not path.exists():
    raise ConversionError(f'{path}: no such file')
  if path.is_dir():
    raise ConversionError(f'{path}: is a directory, not a checkpoint file')
  try:
    with warnings.catch_warnings():
      # Old pickle protocols draw a warning that is no use to the user.
      warnings.simplefilter('ignore')
      return torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as error:
    if 'Weights only load failed' in str(error):
      raise weights_only_refusal(path, str(error)) from None
    raise ConversionError(
        f'{path}: not a PyTorch checkpoint ({first_sentence(error)})') from None
  except Exception as error:
    # A damaged file fails deep inside torch.load in many ways (the zip
    # reader's RuntimeError, EOFError, IndexError, KeyError, OSError...);
    # to the user they all mean the same.
    detail = first_sentence(error) if str(error) else 'the file ends early'
    raise ConversionError(
        f'{path}: unreadable, truncated or not a PyTorch checkpoint '
        f'({type(error).__name__}: {detail})') from None


def state_dict_of(path, loaded):
  """(tensors by key, description of the container) of a loaded checkpoint.

  Accepts a training checkpoint {'state_dict': ..., 'epoch': ...} (as
  ECO-pytorch's main.py saves) and a bare state dict.
  """
  if isinstance(loaded, dict) and isinstance(loaded.get('state_dict'), dict):
    container = f"training checkpoint ({', '.join(str(k) for k in loaded)})"
    state = loaded['state_dict']
  elif isinstance(loaded, dict):
    container = 'bare state dict'
    state = loaded
  else:
    raise ConversionError(
        f'{path}: not a checkpoint: holds a {type(loaded).__name__}, '
        'not a state dict')
  tensors = {
      k: v
      for k, v in state.items()
      if isinstance(k, str) and torch.is_tensor(v)
  }
  if not tensors:
    raise ConversionError(f'{path}: not a checkpoint: it holds no tensors')
  return tensors, container


def other_network_error(path, keys, wanted, known_layouts):
  """The error for a file without `wanted`'s layers, saying what it holds."""
  for network, signature in NETWORK_SIGNATURES.items():
    found = [key for key in keys if signature.search(key)]
    if network != wanted and found:
      return ConversionError(
          f'{path}: this is an {network} checkpoint (keys {list_keys(found, 2)}), '
          f'not {wanted}; convert it with python -m {CONVERTERS[network]}')
  return ConversionError(
      f'{path}: no {wanted} layers in a known key layout ({known_layouts}); '
      f'its keys are {list_keys(sorted(keys), 3)}')


def sha256_of(path):
  digest = hashlib.sha256()
  with open(path, 'rb') as file:
    for block in iter(lambda: file.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


# ---------------------------------------------------------------- mapping


def reference_tensors(model):
  """{state_dict key: (shape, owning module)} of a reference torch model.

  BatchNorm's num_batches_tracked counters are left out: Flax keeps none.
  """
  modules = dict(model.named_modules())
  return {
      key: (tuple(value.shape), modules[key.rpartition('.')[0]])
      for key, value in model.state_dict().items()
      if not key.endswith('.num_batches_tracked')
  }


def flax_leaf(module, torch_name):
  """(collection, leaf name) of a torch parameter or buffer in Flax."""
  if isinstance(module, nn.modules.batchnorm._BatchNorm):
    return {
        'weight': ('params', 'scale'),
        'bias': ('params', 'bias'),
        'running_mean': ('batch_stats', 'mean'),
        'running_var': ('batch_stats', 'var')
    }[torch_name]
  return {
      'weight': ('params', 'kernel'),
      'bias': ('params', 'bias')
  }[torch_name]


def flax_array(leaf, tensor):
  """A torch tensor as the Flax leaf: kernels move their input and output
  channel axes last, (O, I, *window) -> (*window, I, O)."""
  array = tensor.detach().to(torch.float32).numpy()
  if leaf == 'kernel':
    array = np.transpose(array, tuple(range(2, array.ndim)) + (1, 0))
  return np.ascontiguousarray(array)


@dataclasses.dataclass
class Report:
  """What a conversion did, tensor by tensor, for the printed report."""
  source: str
  layout: str = ''
  mapped: dict = dataclasses.field(default_factory=dict)  # subtree -> count
  ignored: list = dataclasses.field(default_factory=list)  # (keys, why)
  dropped: list = dataclasses.field(default_factory=list)  # (keys, why)
  missing: list = dataclasses.field(default_factory=list)  # (what, consequence)
  new: list = dataclasses.field(default_factory=list)  # (what, why)

  def lines(self):
    total = sum(self.mapped.values())
    parts = ', '.join(f'{name} {count}' for name, count in self.mapped.items())
    lines = [
        f'source: {self.source}', f'layout: {self.layout}',
        f'mapped: {total} tensors ({parts})'
    ]
    for title, entries in (('new', self.new), ('ignored', self.ignored),
                           ('dropped', self.dropped), ('missing',
                                                       self.missing)):
      if not entries:
        lines.append(f'{title}: none')
      for keys, why in entries:
        lines.append(f'{title}: {keys} ({why})')
    return lines


def set_leaf(tree, path, value):
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def map_tensors(path, tensors, expected, flax_layer_path, display_key, report,
                report_group):
  """Flax variables {collection: {...}} from the torch tensors.

  tensors: {reference key: tensor} read from the file.
  expected: reference_tensors() of the reference model, possibly trimmed.
  flax_layer_path(torch layer name, module) -> where the layer lives in Flax.
  display_key(reference key) -> the key as the file spells it, for messages.
  report_group(Flax layer path) -> the part a tensor counts for in the report.
  Raises ConversionError naming every missing or misshapen tensor. Keys of
  the file that are not expected are left for the caller to report.
  """
  missing = [key for key in expected if key not in tensors]
  if missing:
    raise ConversionError(
        f'{path}: missing tensors {list_keys(display_key(k) for k in missing)}')
  misshapen = [
      f'{display_key(key)} {tuple(tensors[key].shape)} (expected {shape})'
      for key, (shape, _) in expected.items()
      if tuple(tensors[key].shape) != shape
  ]
  if misshapen:
    raise ConversionError(
        f'{path}: tensors of the wrong shape: {list_keys(misshapen, 3)}')
  variables = {}
  for key, (_, module) in expected.items():
    layer, _, torch_name = key.rpartition('.')
    collection, leaf = flax_leaf(module, torch_name)
    layer_path = flax_layer_path(layer, module)
    set_leaf(variables, (collection, *layer_path, leaf),
             flax_array(leaf, tensors[key]))
    group = report_group(layer_path)
    report.mapped[group] = report.mapped.get(group, 0) + 1
  return variables


def report_num_batches_tracked(tensors, report):
  counters = [key for key in tensors if key.endswith('.num_batches_tracked')]
  if counters:
    report.ignored.append((f'{len(counters)} x <bn>.num_batches_tracked',
                           'Flax BatchNorm keeps no step counter'))


# ---------------------------------------------------------------- writing


def check_out_dir(out_dir, force):
  """Refuses an existing OUT_DIR unless --force (checked before any work)."""
  out_dir = Path(out_dir)
  if out_dir.exists() and not force:
    raise ConversionError(
        f'{out_dir}: already exists; pass --force to replace it')
  if out_dir.exists() and not out_dir.is_dir():
    raise ConversionError(f'{out_dir}: exists and is not a directory')


def source_metadata(converter, path, layout, num_classes):
  """What conversion.json records of the source checkpoint."""
  return {
      'converter': converter,
      'source': str(Path(path).absolute()),
      'sha256': sha256_of(path),
      'layout': layout,
      'num_classes': num_classes,
  }


def write_and_report(converter, variables, out_dir, metadata, report, force):
  """Writes the checkpoint, then prints where and the conversion report."""
  write_checkpoint(variables, out_dir, metadata, force)
  print(f'{converter}: wrote {out_dir}')
  for line in report.lines():
    print(f'  {line}')


def write_checkpoint(variables, out_dir, metadata, force):
  """Writes `variables` as an Orbax checkpoint at OUT_DIR, all or nothing.

  Orbax writes into a temporary directory beside OUT_DIR, the metadata JSON
  joins it, and one rename puts it in place, so an interrupted conversion
  never leaves a half-written OUT_DIR. With `force` an existing OUT_DIR is
  moved aside first and removed once the new one is in place.
  """
  # Imported here: orbax pulls in JAX, which the error paths never need.
  import orbax.checkpoint as ocp

  check_out_dir(out_dir, force)
  out_dir = Path(out_dir).absolute()
  try:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise ConversionError(
        f'{out_dir}: cannot write ({first_sentence(error)})') from None
  tag = uuid.uuid4().hex[:8]
  partial = out_dir.parent / f'.{out_dir.name}.partial-{tag}'
  replaced = out_dir.parent / f'.{out_dir.name}.replaced-{tag}'
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(partial, variables)
    (partial / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + '\n')
    if out_dir.exists():
      os.rename(out_dir, replaced)
    os.rename(partial, out_dir)
  except OSError as error:
    raise ConversionError(
        f'{out_dir}: cannot write ({first_sentence(error)})') from None
  finally:
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(replaced, ignore_errors=True)


def read_converted(directory, converter):
  """(variables, metadata) of an OUT_DIR that `converter` wrote, for convert.pasnet."""
  import orbax.checkpoint as ocp

  from pasnet_jax import checkpoints

  directory = Path(directory).absolute()
  try:
    metadata = json.loads((directory / METADATA_FILE).read_text())
  except (OSError, ValueError):
    raise ConversionError(f'{directory}: not an output of {converter} '
                          f'(no readable {METADATA_FILE})') from None
  if not isinstance(metadata, dict):
    raise ConversionError(f'{directory}: not an output of {converter} '
                          f'({METADATA_FILE} holds no record)')
  if metadata.get('converter') != converter:
    raise ConversionError(
        f'{directory}: written by {metadata.get("converter")}, '
        f'expected an output of {converter}')
  checkpoints.silence_abandoned_work()
  try:
    variables = ocp.StandardCheckpointer().restore(directory)
  except Exception as error:  # pylint: disable=broad-except
    # A damaged directory fails inside Orbax in many ways: tensorstore's
    # ValueError, a KeyError from a mangled _METADATA, OSError...
    raise ConversionError(
        f'{directory}: unreadable Orbax checkpoint '
        f'({first_sentence(error) or type(error).__name__})') from None
  if not isinstance(variables, dict) or not isinstance(
      variables.get('params'), dict):
    raise ConversionError(f'{directory}: unreadable Orbax checkpoint (no '
                          '"params" tree); convert the original again')
  return variables, metadata


def class_count(text):
  """argparse type of a class count."""
  value = int(text)
  if value < 1:
    raise ValueError(text)
  return value


def run_cli(main, argv=None):
  """Runs a converter's main; a ConversionError becomes one line and exit 2."""
  try:
    main(argv)
  except ConversionError as error:
    print(f'error: {error}', file=sys.stderr)
    return EXIT_BAD_INPUT
  return 0
