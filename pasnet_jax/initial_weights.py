"""The weights a model starts from, by one rule, for training and convert.pasnet.

Sources, in increasing priority: for stage 1 of twice-finetune and the
conventional method, ECO (and OpenPose unless the fusion is "A"); for stage
2 of twice-finetune, OpenPose then stage 1's best checkpoint; in every case
last config.init.workdir.

The rule: every tensor of a source goes where the model has the same name
and shape. A tensor that does not fit is an error naming it, except
  - the classifier of another class count, re-initialised;
  - the first 3D convolution under fusion "I", which then reads 128
    channels instead of x_A's 96, re-initialised;
  - a part the fusion style does without (the appearance branch under "I",
    the pose branch under "A"), left out.
Whatever no source gives (the conv styles' fusion layer, a new classifier)
is drawn fresh. Each case is reported.

The ECO 3D layout is the weights' own: the first source that holds a 3D
part decides it (docs/architecture.md, "Two ECO layouts"); without one,
config.model.eco_layout does.
"""

import dataclasses
import os

from absl import logging
import jax
import ml_collections
import numpy as np

from pasnet_jax import checkpoints
from pasnet_jax.errors import CheckpointError
from pasnet_jax.models import spatiotemporal
from pasnet_jax.models.pasnet import PASNet, init_variables


@dataclasses.dataclass
class Source:
  description: str  # e.g. 'ECO ckpt/eco', for messages
  variables: dict   # {'params': ..., 'batch_stats': ...} as PASNet nests them


@dataclasses.dataclass
class Report:
  """What `combine` did: tensors loaded per source and part, what is new
  and what was left out, each with the reason."""
  loaded: dict = dataclasses.field(default_factory=dict)  # (source, part) -> count
  new: dict = dataclasses.field(default_factory=dict)     # layer -> why
  left_out: dict = dataclasses.field(default_factory=dict)  # (source, part) -> (count, why)

  def lines(self) -> list[str]:
    lines = [f'loaded {count} tensors of {part} from {source}'
             for (source, part), count in self.loaded.items()]
    lines += [f'new: {layer} ({why})' for layer, why in self.new.items()]
    lines += [f'left out: {part} of {source} ({count} tensors; {why})'
              for (source, part), (count, why) in self.left_out.items()]
    return lines


def pose_source(description: str, openpose_variables: dict) -> Source:
  """Converted OpenPose weights (OpenPose()'s variables) as a source,
  nested where PASNet keeps its pose branch."""
  return Source(description, {kind: {'pose': tree}
                              for kind, tree in openpose_variables.items() if tree})


def _flatten(tree: dict) -> dict[tuple[str, ...], np.ndarray]:
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    flat[tuple(str(getattr(p, 'key', p)) for p in path)] = leaf
  return flat


def eco_layout(sources: list[Source], default: str) -> str:
  """The layout of the first source holding a 3D part, else `default`."""
  for source in sources:
    params = source.variables.get('params', {})
    layout = spatiotemporal.layout_of(params.get('spatiotemporal', {}))
    if layout is not None:
      return layout
  return default


def combine(fresh: dict, sources: list[Source], model: PASNet
            ) -> tuple[dict, Report]:
  """`fresh` (the model's variables) with the sources' tensors, by the rule.

  Raises:
    CheckpointError naming the tensors that do not fit.
  """
  merged = _flatten(fresh)
  origin = dict.fromkeys(merged)
  report = Report()
  misfits = []
  first_3d_conv = ('params', 'spatiotemporal',
                   spatiotemporal.first_conv(model.eco_layout))
  model_parts = {key[1] for key in merged}
  for source in sources:
    tensors = _flatten(source.variables)
    loaded = 0
    for key, value in tensors.items():
      part = key[1]
      shape = tuple(np.shape(value))
      if part not in model_parts:
        count, _ = report.left_out.get((source.description, part), (0, ''))
        report.left_out[(source.description, part)] = (
            count + 1, f'fusion {model.fusion} has no use for it')
      elif key in merged and shape == tuple(np.shape(merged[key])):
        merged[key] = np.asarray(value, dtype=np.asarray(merged[key]).dtype)
        origin[key] = source.description
        loaded += 1
      elif key in merged and part == 'classifier':
        report.new['classifier'] = (
            f'{source.description} has {shape[-1]} classes, this model '
            f'{model.num_classes}')
      elif key in merged and key[:3] == first_3d_conv and model.fusion == 'I':
        report.new['/'.join(key[1:3])] = (
            f'fusion I feeds it {np.shape(merged[key])[-2]} channels, '
            f'{source.description} {shape[-2]}')
      else:
        expected = (f'(expected {tuple(np.shape(merged[key]))})'
                    if key in merged else '(not in this model)')
        misfits.append(f'{"/".join(key)} {shape} {expected}')
    if misfits:
      listed = '; '.join(misfits[:3]) + (
          f'; and {len(misfits) - 3} more' if len(misfits) > 3 else '')
      raise CheckpointError(
          f'{source.description} holds tensors that do not fit this model: '
          f'{listed}. Give weights of this model (fusion {model.fusion}, ECO '
          f'layout {model.eco_layout}) in --config.init.')
    if not loaded:
      # Every part left out: weights meant for another model, most likely.
      names = ['/'.join(key) for key in tensors]
      held = ', '.join(names[:3]) + (
          f' and {len(names) - 3} more' if len(names) > 3 else '')
      raise CheckpointError(
          f'None of the {len(tensors)} tensors of {source.description} fit '
          f'this model (fusion {model.fusion}): it holds {held}. Give '
          'weights this model uses in --config.init.')
  for key, description in origin.items():
    if description is not None:
      counted = (description, key[1])
      report.loaded[counted] = report.loaded.get(counted, 0) + 1
    else:
      layer = '/'.join(key[1:3])
      if not any(layer == new or layer.startswith(new + '/') for new in report.new):
        report.new.setdefault(key[1], 'no source gives it; drawn fresh')
  treedef = jax.tree_util.tree_structure(fresh)
  return jax.tree_util.tree_unflatten(
      treedef, [merged[key] for key in _flatten(fresh)]), report


def sources_for(config: ml_collections.ConfigDict, stage: int,
                workdir: str) -> list[Source]:
  """The sources of `stage` of the run in `workdir`, in increasing priority
  (stage 2 reads stage 1's best checkpoint from WORKDIR/stage1)."""
  paths = []
  if stage == 2 and config.strategy == 'twice':
    if config.init.openpose:
      paths.append(('OpenPose ' + config.init.openpose, config.init.openpose, True))
    paths.append(('stage 1 ' + os.path.join(workdir, 'stage1'),
                  os.path.join(workdir, 'stage1'), False))
  else:
    if config.init.eco:
      paths.append(('ECO ' + config.init.eco, config.init.eco, False))
    if config.init.openpose and config.model.fusion != 'A':
      paths.append(('OpenPose ' + config.init.openpose, config.init.openpose, True))
  if config.init.workdir:
    paths.append(('workdir ' + config.init.workdir, config.init.workdir, False))
  sources = []
  for description, path, is_openpose in paths:
    variables = checkpoints.load_variables(path)
    sources.append(pose_source(description, variables) if is_openpose
                   else Source(description, variables))
  return sources


def initial_variables(model: PASNet, sources: list[Source], seed: int,
                      video_shape: tuple[int, ...]) -> dict:
  """{'params', 'batch_stats'} of `model` from `sources` and fresh draws;
  logs what came from where."""
  fresh = init_variables(model, seed, video_shape)
  variables, report = combine(fresh, sources, model)
  for line in report.lines():
    logging.info('init: %s', line)
  return variables
