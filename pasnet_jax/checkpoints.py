"""Orbax checkpoints: the training state of a run, and initial weights.

A run's checkpoints live in WORKDIR/checkpoints/<step>/ with two items:
`state` (parameters, BatchNorm statistics, optimizer state, step, RNG) and
`data` (the input position, JSON). Orbax writes each step into a temporary
directory and renames it when complete, so a run killed during a save
resumes from the previous complete step.
"""

import json
import os
from typing import Any, Iterable

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy

CHECKPOINT_DIR = 'checkpoints'
BEST_METRIC = 'top1'


class CheckpointError(Exception):
  """A checkpoint that cannot be used; the message says which and why."""


def create_manager(workdir: str, keep: int,
                   asynchronous: bool = True) -> ocp.CheckpointManager:
  """Manager keeping the `keep` latest steps and the best by eval top-1."""
  policy = preservation_policy.AnyPreservationPolicy([
      preservation_policy.LatestN(n=keep),
      preservation_policy.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, create=True, cleanup_tmp_directories=True,
      enable_async_checkpointing=asynchronous)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir),
                                            CHECKPOINT_DIR),
                               item_names=('state', 'data'), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_state: dict, metrics: dict | None = None) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
               metrics=metrics, force=True)


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of `tree`, the target of a restore."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=getattr(x, 'sharding', None)), tree)


def restore(manager: ocp.CheckpointManager, step: int,
            abstract_state: Any) -> tuple[Any, dict]:
  """(state, data_state) of `step`; raises CheckpointError if unusable."""
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore()))
  except (ValueError, KeyError, FileNotFoundError, TypeError) as error:
    raise CheckpointError(
        f'Checkpoint {manager.directory}/{step} does not fit this model and '
        f'optimizer ({error.__class__.__name__}: {error}). It was written by '
        'another configuration: use another --workdir, or restore that '
        'configuration.') from error
  return restored.state, restored.data


def best_step(manager: ocp.CheckpointManager) -> int | None:
  step = manager.best_step()
  return step if step is not None else manager.latest_step()


def _is_run_workdir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, CHECKPOINT_DIR))


def load_variables(path: str, which: str = 'best') -> dict:
  """{'params', 'batch_stats'} from a converted checkpoint or a run's workdir.

  A run's workdir gives its best checkpoint (by eval top-1; the latest if
  none was evaluated), or with which='latest' its latest.
  """
  if not os.path.exists(path):
    raise CheckpointError(f'Initial weights {path} do not exist; give a '
                          'directory written by python -m convert.eco / '
                          'convert.openpose or a training workdir.')
  path = os.path.abspath(path)
  try:
    if _is_run_workdir(path):
      manager = ocp.CheckpointManager(os.path.join(path, CHECKPOINT_DIR),
                                      item_names=('state', 'data'),
                                      options=ocp.CheckpointManagerOptions(
                                          read_only=True))
      step = best_step(manager) if which == 'best' else manager.latest_step()
      if step is None:
        raise CheckpointError(f'Workdir {path} holds no complete checkpoint.')
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore()))
      state = restored.state
      logging.info('Loaded step %d of %s', step, path)
      return {'params': state['params'], 'batch_stats': state['batch_stats']}
    restored = ocp.StandardCheckpointer().restore(path)
  except CheckpointError:
    raise
  except Exception as error:  # Orbax raises many types for a damaged file.
    raise CheckpointError(
        f'Cannot read initial weights from {path}: {error.__class__.__name__}: '
        f'{error}. Convert the original checkpoint again.') from error
  if not isinstance(restored, dict) or 'params' not in restored:
    raise CheckpointError(f'{path} is not a pasnet_jax checkpoint (it has no '
                          '"params"); convert the original with python -m convert.eco.')
  return {'params': restored['params'],
          'batch_stats': restored.get('batch_stats', {})}


def _flatten(tree: Any) -> dict[str, Any]:
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    flat['/'.join(str(getattr(p, 'key', p)) for p in path)] = leaf
  return flat


def merge_initial(fresh: dict, sources: Iterable[tuple[str, dict]],
                  ) -> tuple[dict, list[str]]:
  """Overwrites leaves of `fresh` with same-named, same-shaped loaded ones.

  `sources` are (description, variables) pairs, later ones winning. Returns
  the merged variables and a report: what was loaded from where, what stays
  newly initialised (and why), and what was dropped.
  """
  merged = _flatten(fresh)
  origin = {name: None for name in merged}
  dropped = []
  for description, variables in sources:
    for name, value in _flatten(variables).items():
      if name not in merged:
        dropped.append(f'{name} from {description} (not in this model)')
      elif tuple(np.shape(value)) != tuple(np.shape(merged[name])):
        dropped.append(f'{name} from {description}: shape {np.shape(value)} '
                       f'!= {np.shape(merged[name])}, re-initialised')
      else:
        merged[name] = np.asarray(value, dtype=np.asarray(merged[name]).dtype)
        origin[name] = description
  report = []
  for description in dict.fromkeys(o for o in origin.values() if o):
    count = sum(1 for o in origin.values() if o == description)
    report.append(f'loaded {count} tensors from {description}')
  new = sorted(name for name, o in origin.items() if o is None)
  if new:
    prefixes = sorted({'/'.join(n.split('/')[:2]) for n in new})
    report.append(f'newly initialised {len(new)} tensors: ' + ', '.join(prefixes))
  report.extend(f'dropped {d}' for d in dropped)

  treedef = jax.tree_util.tree_structure(fresh)
  leaves = [merged[name] for name in _flatten(fresh)]
  return jax.tree_util.tree_unflatten(treedef, leaves), report


def write_json_atomically(path: str, payload: Any) -> None:
  """Writes JSON through a temporary file, so readers never see half of it."""
  with open(path + '.tmp', 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True, default=_json_default)
  os.replace(path + '.tmp', path)


def _json_default(value):
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, tuple):
    return list(value)
  raise TypeError(f'Cannot write {type(value).__name__} as JSON')
