"""A run's directory: that it is writable, what run it holds, and its results.

WORKDIR/checkpoint_format.json records what the checkpoints are of (the
run identity: dataset, class count, model, optimizer), so that a resume
with another config is refused with the keys that differ and how to set
them; WORKDIR/config.json keeps the whole config, for the programs that
load a trained run; WORKDIR/results.json and the confusion matrix are the
final evaluation. A twice-finetune run keeps each stage in its own
subdirectory, and its final model in stage2.
"""

import json
import os
import shlex
import tempfile

import jax
import ml_collections

from pasnet_jax import checkpoints
from pasnet_jax import metrics as metrics_lib
from pasnet_jax.errors import TrainingError

# What a workdir's checkpoints are of, with the dataset's class count:
# resuming with other values would fail to restore (the shapes of the state
# differ) or quietly go on training another model.
IDENTITY_KEYS = ('dataset.name', 'dataset.config', 'model.fusion', 'frames',
                 'image_size', 'strategy', 'optimizer.name', 'model.freeze_pose',
                 'model.bn_policy', 'model.eco_layout')


def _lookup(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


def check_workdir(workdir: str) -> None:
  """Creates `workdir` if needed; TrainingError if it cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    # A probe of its own for each process: with one shared name, one
    # process could remove the probe another is about to remove.
    with tempfile.NamedTemporaryFile('w', dir=workdir, prefix='.write_test'
                                     ) as probe:
      probe.write('ok')
  except OSError as error:
    raise TrainingError(f'Cannot write to workdir {workdir}: {error.strerror}. '
                        'Give a writable --workdir.') from error


def _compare_identity(config: ml_collections.ConfigDict, workdir: str,
                      num_classes: int) -> tuple[dict, dict, list[str]]:
  """(this run's identity, the one `workdir` recorded, the keys that differ).

  A key the workdir did not record (a run of an older version) does not
  differ.
  """
  identity = {key: _lookup(config, key) for key in IDENTITY_KEYS}
  identity['num_classes'] = num_classes
  previous = checkpoints.read_format(workdir) or {}
  differing = [key for key in identity
               if key in previous and previous[key] != identity[key]]
  return identity, previous, differing


def claim_workdir(config: ml_collections.ConfigDict, workdir: str,
                  num_classes: int) -> None:
  """Refuses a workdir of another run; records this run's config and identity."""
  identity, previous, differing = _compare_identity(config, workdir,
                                                    num_classes)
  if differing:
    there = ', '.join(f'{key}={previous[key]!r}' for key in differing)
    here = ', '.join(f'{key}={identity[key]!r}' for key in differing)
    flags = ' '.join(f'--config.{key}={shlex.quote(str(previous[key]))}'
                     for key in differing if key != 'num_classes')
    resume = [f'set {flags}'] if flags else []
    if 'num_classes' in differing:
      resume.append(f'use its dataset ({previous["num_classes"]} classes)')
    raise TrainingError(
        f'Workdir {workdir} holds a run with {there}, but this config has '
        f'{here}. Use a new --workdir, or to resume that run '
        + ' and '.join(resume) + '.')
  if jax.process_index() == 0:
    checkpoints.write_format(workdir, identity)
    checkpoints.write_json_atomically(os.path.join(workdir, 'config.json'),
                                      config.to_dict())


def finished_results(config: ml_collections.ConfigDict, workdir: str,
                     num_steps: int, num_classes: int) -> dict | None:
  """The results of the stage in `workdir` if it has trained its `num_steps`
  steps under this config; None if there is anything left to do."""
  path = os.path.join(workdir, 'results.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    results = json.load(f)
  if results.get('num_train_steps') != num_steps:
    return None
  # The layout comes from the initial weights, which a finished stage does
  # not load; every other part of the identity must agree.
  _, previous, differing = _compare_identity(config, workdir, num_classes)
  if not previous or set(differing) - {'model.eco_layout'}:
    return None
  return results


def write_results(workdir: str, summary: dict, class_names, extra: dict) -> dict:
  """results.json and the confusion matrix of one stage's final evaluation."""
  results = {k: v for k, v in summary.items() if k != 'confusion_matrix'}
  results.update(extra)
  if jax.process_index() == 0:
    metrics_lib.write_confusion_matrix(
        summary['confusion_matrix'], class_names, workdir,
        title=f'{extra.get("fusion", "")} step {extra.get("step", "")}')
    checkpoints.write_json_atomically(os.path.join(workdir, 'results.json'), results)
  return results


def write_twice_results(workdir: str, stage1: dict, stage2: dict) -> dict:
  """A twice-finetune run's results: stage 2's, with stage 1's summary."""
  results = dict(stage2, stage1={k: stage1[k] for k in
                                 ('top1', 'top5', 'mean_class_accuracy', 'step')})
  if jax.process_index() == 0:
    checkpoints.write_json_atomically(os.path.join(workdir, 'results.json'), results)
    _copy_file(os.path.join(workdir, 'stage2', 'confusion_matrix.png'),
               os.path.join(workdir, 'confusion_matrix.png'))
    _copy_file(os.path.join(workdir, 'stage2', 'confusion_matrix.csv'),
               os.path.join(workdir, 'confusion_matrix.csv'))
  return results


def _copy_file(source: str, destination: str) -> None:
  with open(source, 'rb') as f:
    payload = f.read()
  with open(destination + '.tmp', 'wb') as f:
    f.write(payload)
  os.replace(destination + '.tmp', destination)


def final_stage_dir(workdir: str) -> str:
  """The directory holding a run's final model: stage2 for twice-finetune."""
  stage2 = os.path.join(workdir, 'stage2')
  return stage2 if os.path.isdir(stage2) else workdir
