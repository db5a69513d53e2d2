"""Orbax checkpoints: the training state of a run, and initial weights.

A run's checkpoints live in WORKDIR/checkpoints/<step>/ with two items:
`state` (parameters, BatchNorm statistics, optimizer state, step, RNG) and
`data` (the input position, JSON). Orbax writes each step into a temporary
directory and renames it when complete, so a run killed during a save
resumes from the previous complete step.

Beside them, WORKDIR/checkpoint_format.json records the format version and
what the checkpoints are of (dataset, classes, model, optimizer), so that a
newer format or another model is refused with a message, not an Orbax error.
"""

import contextlib
import errno
import importlib.metadata
import json
import logging as python_logging
import os
import re
import sys
from typing import Any

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy

from pasnet_jax.errors import CheckpointError, NO_ROOM_ERRNOS, StorageError

CHECKPOINT_DIR = 'checkpoints'
BEST_METRIC = 'top1'
FORMAT_FILE = 'checkpoint_format.json'
# Raise when a change makes checkpoints unreadable by earlier versions.
# 2: the training state holds the learning-rate scale of the plateau
# schedule, and the default ECO layout is the authors'.
FORMAT_VERSION = 2
# Why a write failed for lack of room or of permission; the fix is outside.
_STORAGE_ERRNOS = NO_ROOM_ERRNOS + (errno.EROFS, errno.EACCES, errno.EPERM)


def error_summary(error: BaseException, limit: int = 300) -> str:
  """The type and first line of `error`: Orbax and XLA messages run long."""
  lines = str(error).strip().splitlines()
  text = lines[0].split(' See full TensorStore details')[0] if lines else ''
  text = text if len(text) <= limit else text[:limit] + '...'
  return f'{error.__class__.__name__}: {text}'


def _is_abandoned_work_echo(record: python_logging.LogRecord) -> bool:
  return record.getMessage().startswith(('Task exception was never retrieved',
                                         'Future exception was never retrieved'))


def silence_abandoned_work() -> None:
  """Keeps the echoes of a failed Orbax read or write off the console.

  When one of its concurrent reads or writes fails, Orbax abandons the
  others and closes its event loop while TensorStore still completes them
  into it, from its own threads and possibly before the error has reached
  us. asyncio then reports each, with a traceback, as an unraisable "Event
  loop is closed" or as a task exception never retrieved: noise that would
  bury the one error line. Called before a checkpoint is used, since the
  echoes can come first; only those two reports are dropped.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop_echoes', False):
    return

  def hook(unraisable):
    if (unraisable.exc_type is not RuntimeError or
        str(unraisable.exc_value) != 'Event loop is closed'):
      previous(unraisable)
  hook.drops_closed_loop_echoes = True
  sys.unraisablehook = hook
  python_logging.getLogger('asyncio').addFilter(
      lambda record: not _is_abandoned_work_echo(record))


def _storage_errno(error: BaseException) -> int | None:
  """The errno if `error`, or one it came from, is a write the OS refused."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
      return error.errno
    # TensorStore reports the errno only inside its message.
    match = re.search(r"os_error_code='?(\d+)", str(error))
    if match and int(match.group(1)) in _STORAGE_ERRNOS:
      return int(match.group(1))
    error = error.__cause__ or error.__context__
  return None


def complete_steps(directory: str) -> list[int]:
  """Steps with a complete checkpoint: Orbax renames a step's directory to
  its number only once every file of it is written."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


@contextlib.contextmanager
def _storage_errors(manager: ocp.CheckpointManager, step: int | None):
  """Turns a write refused by the disk into StorageError naming the place."""
  try:
    yield
  except Exception as error:  # Orbax wraps the OS error in several types.
    code = _storage_errno(error)
    if code is None:
      raise
    kept = complete_steps(str(manager.directory))
    which = f'step {step} ' if step is not None else ''
    fix = ('Free space there (or give a --workdir with room)'
           if code in NO_ROOM_ERRNOS else
           'Make it writable (or give another --workdir)')
    resume = (f'it resumes from step {kept[-1]}, the last complete checkpoint'
              if kept else 'it starts over, as no checkpoint is complete')
    raise StorageError(
        f'Cannot write checkpoint {which}in {manager.directory}: '
        f'{os.strerror(code)}. {fix} and run the same command again: '
        f'{resume}.') from error


def _best_metric(metrics: dict) -> float:
  return metrics[BEST_METRIC]


# Orbax writes a step's metrics, and its best_step() ranks steps by them,
# only when best_fn is set; without it best_step() is the latest step.
_TRACK_BEST = {'best_fn': _best_metric, 'best_mode': 'max'}


def create_manager(workdir: str, keep: int,
                   asynchronous: bool = True) -> ocp.CheckpointManager:
  """Manager keeping the `keep` latest steps and the best by eval top-1."""
  silence_abandoned_work()
  policy = preservation_policy.AnyPreservationPolicy([
      preservation_policy.LatestN(n=keep),
      preservation_policy.BestN(get_metric_fn=_best_metric, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, create=True, cleanup_tmp_directories=True,
      enable_async_checkpointing=asynchronous, **_TRACK_BEST)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir),
                                            CHECKPOINT_DIR),
                               item_handlers=_item_handlers(), options=options)


def _item_handlers() -> dict:
  # Named handlers let the manager read a step's metadata before restoring.
  return {'state': ocp.StandardCheckpointHandler(),
          'data': ocp.JsonCheckpointHandler()}


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_state: dict, metrics: dict | None = None) -> None:
  """Starts saving `step` in the background.

  Raises StorageError if this or the previous save was refused by the disk.
  """
  # The previous save's error surfaces here, when Orbax waits for it.
  wait(manager)
  with _storage_errors(manager, step):
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
                 metrics=metrics, force=True)


def _pending_step(manager: ocp.CheckpointManager) -> int | None:
  steps = manager.all_steps()
  return steps[-1] if steps else None


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for the background save; StorageError if the disk refused it."""
  with _storage_errors(manager, _pending_step(manager)):
    manager.wait_until_finished()


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of `tree`, the target of a restore."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=getattr(x, 'sharding', None)), tree)


def _variable_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'params/a/b/kernel' -> shape, for the parameters and BatchNorm statistics."""
  return {name: tuple(getattr(leaf, 'shape', np.shape(leaf)))
          for name, leaf in _flatten(tree).items()
          if name.split('/')[0] in ('params', 'batch_stats')}


def describe_mismatch(found: dict[str, tuple], expected: dict[str, tuple],
                      limit: int = 3) -> str:
  """The first differences between two {name: shape} maps, or ''."""
  problems = []
  for name in sorted(set(found) | set(expected)):
    if name not in expected:
      problems.append(f'{name} is not in this model')
    elif name not in found:
      problems.append(f'{name} is missing')
    elif found[name] != expected[name]:
      problems.append(f'{name} has shape {found[name]}, this model '
                      f'{expected[name]}')
  if len(problems) > limit:
    problems = problems[:limit] + [f'{len(problems) - limit} more']
  return '; '.join(problems)


def check_fits(variables: Any, expected: Any, source: str) -> None:
  """Raises CheckpointError naming the keys where `variables` do not fit."""
  mismatch = describe_mismatch(_variable_shapes(variables),
                               _variable_shapes(expected))
  if mismatch:
    raise CheckpointError(
        f'{source} does not fit the model its config describes: {mismatch}. '
        'The checkpoint and config.json come from different runs.')


def _damaged(directory: str, step: int, error: BaseException) -> CheckpointError:
  earlier = [s for s in complete_steps(directory) if s < step]
  fallback = (f'Delete {directory}/{step} to use step {earlier[-1]} instead'
              if earlier else 'Retrain: no earlier step is kept')
  return CheckpointError(
      f'Checkpoint {directory}/{step} cannot be read ({error_summary(error)}): '
      f'its files are damaged or incomplete. {fallback}.')


def restore(manager: ocp.CheckpointManager, step: int,
            abstract_state: Any) -> tuple[Any, dict]:
  """(state, data_state) of `step`; raises CheckpointError if unusable."""
  directory = str(manager.directory)
  try:
    saved = manager.item_metadata(step)['state']
  except Exception as error:  # Orbax raises many types for a damaged file.
    raise _damaged(directory, step, error) from error
  mismatch = describe_mismatch(_variable_shapes(saved),
                               _variable_shapes(abstract_state))
  if mismatch:
    raise CheckpointError(
        f'Checkpoint {directory}/{step} does not fit this model: {mismatch}. '
        'It was written by another configuration: use a new --workdir, or '
        'the configuration that wrote it.')
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore()))
  except Exception as error:  # Orbax raises many types for a damaged file.
    raise _damaged(directory, step, error) from error
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
  silence_abandoned_work()
  if _is_run_workdir(path):
    return _load_run(path, which)
  try:
    restored = ocp.StandardCheckpointer().restore(path)
  except Exception as error:  # Orbax raises many types for a damaged file.
    raise CheckpointError(
        f'Cannot read initial weights from {path} ({error_summary(error)}). '
        'Convert the original checkpoint again.') from error
  if not isinstance(restored, dict) or 'params' not in restored:
    raise CheckpointError(f'{path} is not a pasnet_jax checkpoint (it has no '
                          '"params"); convert the original with python -m convert.eco.')
  return {'params': restored['params'],
          'batch_stats': restored.get('batch_stats', {})}


def _load_run(workdir: str, which: str) -> dict:
  read_format(workdir)
  directory = os.path.join(workdir, CHECKPOINT_DIR)
  manager = ocp.CheckpointManager(
      directory, item_handlers=_item_handlers(),
      options=ocp.CheckpointManagerOptions(read_only=True, **_TRACK_BEST))
  step = best_step(manager) if which == 'best' else manager.latest_step()
  if step is None:
    raise CheckpointError(f'Workdir {workdir} holds no complete checkpoint.')
  try:
    state = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore())).state
  except Exception as error:  # Orbax raises many types for a damaged file.
    raise _damaged(directory, step, error) from error
  logging.info('Loaded step %d of %s', step, workdir)
  return {'params': state['params'], 'batch_stats': state['batch_stats']}


def write_format(workdir: str, identity: dict) -> None:
  """Records the format and what the checkpoints of `workdir` are of."""
  try:
    version = importlib.metadata.version('pasnet_jax')
  except importlib.metadata.PackageNotFoundError:
    version = 'unknown'
  write_json_atomically(os.path.join(workdir, FORMAT_FILE), {
      'format_version': FORMAT_VERSION, 'written_by': f'pasnet_jax {version}',
      'identity': identity})


def read_format(workdir: str) -> dict | None:
  """The identity recorded in `workdir`, None for a run that predates it.

  Raises CheckpointError for a newer format or an unreadable file.
  """
  path = os.path.join(workdir, FORMAT_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      recorded = json.load(f)
    version = int(recorded['format_version'])
    identity = dict(recorded['identity'])
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise CheckpointError(f'{path} is unreadable ({error_summary(error)}); '
                          'restore it from a copy or use a new --workdir.'
                          ) from error
  if version < FORMAT_VERSION:
    raise CheckpointError(
        f'{path}: the checkpoints are in format {version}, which this '
        f'pasnet_jax cannot resume (format {FORMAT_VERSION} keeps the '
        'learning-rate schedule\'s state). Use a new --workdir; to start from '
        'this run\'s weights, add --config.init.workdir=' + workdir + '.')
  if version > FORMAT_VERSION:
    raise CheckpointError(
        f'{path}: the checkpoints are in format {version}, written by '
        f'{recorded.get("written_by", "a newer pasnet_jax")}; this pasnet_jax '
        f'reads format {FORMAT_VERSION} and earlier. Upgrade pasnet_jax to use '
        'them.')
  return identity


def _key_name(key) -> str:
  for attribute in ('key', 'name', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _flatten(tree: Any) -> dict[str, Any]:
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    flat['/'.join(_key_name(p) for p in path)] = leaf
  return flat


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
