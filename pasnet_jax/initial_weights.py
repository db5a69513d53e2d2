"""The weights a stage starts from: converted checkpoints, an earlier stage
or run, and fresh draws for whatever they do not give.

Sources, in increasing priority: for stage 1 of twice-finetune and the
conventional method, ECO (and OpenPose unless the fusion is "A"); for stage
2 of twice-finetune, OpenPose then stage 1's best checkpoint; in every
case last config.init.workdir. A classifier of another class count is
re-initialised.
"""

import os

from absl import logging
import ml_collections

from pasnet_jax import checkpoints
from pasnet_jax.models.pasnet import PASNet, init_variables


def initial_variables(config: ml_collections.ConfigDict, model: PASNet,
                      stage: int, workdir: str, num_classes: int) -> dict:
  """{'params', 'batch_stats'} for `model` at the start of `stage`.

  `workdir` is the run's directory (stage 2 reads stage 1's checkpoints
  from WORKDIR/stage1). Logs what came from where.
  """
  sources = _initial_sources(config, stage, workdir)
  fresh = init_variables(model, config.seed,
                         (1, config.frames, config.image_size,
                          config.image_size, 3))
  variables, report = checkpoints.merge_initial(
      fresh, _drop_mismatched_classifier(sources, num_classes))
  for line in report:
    logging.info('init: %s', line)
  return variables


def _initial_sources(config, stage: int, workdir: str) -> list[tuple[str, dict]]:
  """(description, variables) to initialise from, in increasing priority."""
  paths = []
  if stage == 2 and config.strategy == 'twice':
    if config.init.openpose:
      paths.append(('OpenPose ' + config.init.openpose, config.init.openpose, 'pose'))
    paths.append(('stage 1 ' + os.path.join(workdir, 'stage1'),
                  os.path.join(workdir, 'stage1'), None))
  else:
    if config.init.eco:
      paths.append(('ECO ' + config.init.eco, config.init.eco, None))
    if config.init.openpose and config.model.fusion != 'A':
      paths.append(('OpenPose ' + config.init.openpose, config.init.openpose, 'pose'))
  if config.init.workdir:
    paths.append(('workdir ' + config.init.workdir, config.init.workdir, None))
  sources = []
  for description, path, subtree in paths:
    variables = checkpoints.load_variables(path)
    if subtree:
      # Converted OpenPose weights are OpenPose()'s variables: nest them
      # where PASNet keeps its pose branch.
      variables = {kind: {subtree: tree} for kind, tree in variables.items() if tree}
    sources.append((description, variables))
  return sources


def _drop_mismatched_classifier(sources, num_classes: int):
  """A classifier of another size is re-initialised, with a message."""
  kept = []
  for description, variables in sources:
    classifier = variables.get('params', {}).get('classifier')
    if classifier is not None and classifier['bias'].shape[0] != num_classes:
      logging.warning('Classifier of %s has %d classes, this dataset %d: it is '
                      're-initialised.', description, classifier['bias'].shape[0],
                      num_classes)
      params = {k: v for k, v in variables['params'].items() if k != 'classifier'}
      variables = dict(variables, params=params)
    kept.append((description, variables))
  return kept
