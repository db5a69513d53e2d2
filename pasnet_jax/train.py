"""Training and evaluation of PAS-Net: `train_and_evaluate(config, workdir)`.

The paper's twice-finetune method (Sec. III-C) runs as two stages, each in
its own subdirectory with its own checkpoints and results:
  WORKDIR/stage1  ECO (fusion "A"), from the converted Kinetics ECO weights;
  WORKDIR/stage2  PAS-Net, from stage 1's best checkpoint and OpenPose.
The conventional method runs stage 2 alone, in WORKDIR.

One jitted step serves one device or every device of every host: batches
are split over the mesh axis "data", the state is replicated, and XLA adds
the gradient all-reduce.
"""

import dataclasses
import functools
import json
import os
import shlex
import signal
import tempfile
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import tensorflow_datasets as tfds

from pasnet_jax import checkpoints
from pasnet_jax import metrics as metrics_lib
from pasnet_jax import parallel
from pasnet_jax import profiling
from pasnet_jax.data import pipeline
from pasnet_jax.data.errors import DatasetError
from pasnet_jax.models import fusion as fusion_lib
from pasnet_jax.models import layers
from pasnet_jax.models.fusion import Lambdas
from pasnet_jax.models.pasnet import PASNet, STRIDE, init_variables

PREEMPTED_EXIT_CODE = 3
STRATEGIES = ('twice', 'conventional')
OPTIMIZERS = ('sgd', 'adam')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# What a workdir's checkpoints are of, with the dataset's class count:
# resuming with other values would fail to restore (the shapes of the state
# differ) or quietly go on training another model.
IDENTITY_KEYS = ('dataset.name', 'dataset.config', 'model.fusion', 'frames',
                 'image_size', 'strategy', 'optimizer.name', 'model.freeze_pose',
                 'model.bn_policy', 'model.eco_layout')


class TrainingError(Exception):
  """Training cannot go on; the message says why and what to do."""


class Diverged(TrainingError):
  """The loss became NaN or infinite."""


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and a fix."""


class PeerLost(TrainingError):
  """A collective operation failed: another process has most likely died."""


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; a checkpoint of the current step was saved."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # Raw uint32 key data, so that it checkpoints as an array.


def _lookup(config, dotted: str):
  for part in dotted.split('.'):
    config = config[part]
  return config


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the key and a fix, before any work starts."""
  problems = []
  if config.model.fusion not in fusion_lib.STYLES:
    problems.append(f'model.fusion={config.model.fusion!r} is not a style; '
                    'valid: ' + ', '.join(fusion_lib.STYLES))
  if config.image_size <= 0 or config.image_size % STRIDE:
    problems.append(f'image_size={config.image_size} must be a positive '
                    f'multiple of {STRIDE} (e.g. 224)')
  if config.frames < 1:
    problems.append(f'frames={config.frames}: need at least one frame (K >= 1)')
  if config.strategy not in STRATEGIES:
    problems.append(f'strategy={config.strategy!r}; valid: {", ".join(STRATEGIES)}')
  if config.optimizer.name not in OPTIMIZERS:
    problems.append(f'optimizer.name={config.optimizer.name!r}; valid: '
                    + ', '.join(OPTIMIZERS))
  if config.model.dtype not in DTYPES:
    problems.append(f'model.dtype={config.model.dtype!r}; valid: '
                    + ', '.join(DTYPES))
  if config.accumulation_steps < 1 or config.batch_size % config.accumulation_steps:
    problems.append(f'batch_size={config.batch_size} must be a multiple of '
                    f'accumulation_steps={config.accumulation_steps}')
  for key in ('num_train_steps', 'log_every_steps', 'eval_every_steps',
              'checkpoint_every_steps', 'keep_checkpoints', 'batch_size',
              'eval_batch_size'):
    if _lookup(config, key) < 1:
      problems.append(f'{key}={_lookup(config, key)} must be at least 1')
  if problems:
    raise ConfigError('Invalid config: ' + '; '.join(problems))


def validate_devices(config: ml_collections.ConfigDict) -> None:
  """Batch sizes must split evenly over the devices; says what to set."""
  devices = jax.device_count()
  microbatch = config.batch_size // config.accumulation_steps
  if microbatch % devices:
    raise ConfigError(
        f'batch_size / accumulation_steps = {microbatch} clips per microbatch '
        f'does not divide over {devices} devices; set --config.batch_size to a '
        f'multiple of {devices * config.accumulation_steps} or change '
        '--config.accumulation_steps')
  if config.eval_batch_size % devices:
    raise ConfigError(f'eval_batch_size={config.eval_batch_size} does not divide '
                     f'over {devices} devices; set --config.eval_batch_size to '
                     f'a multiple of {devices}')


def create_model(model_config: ml_collections.ConfigDict, num_classes: int,
                 fusion: str | None = None) -> PASNet:
  return PASNet(
      num_classes=num_classes,
      fusion=fusion or model_config.fusion,
      dropout=model_config.dropout,
      dtype=DTYPES[model_config.dtype],
      bn_policy=model_config.bn_policy,
      freeze_pose=model_config.freeze_pose,
      remat=model_config.remat,
      lambdas=Lambdas(**model_config.lambdas.to_dict()),
      fusion_conv_init=model_config.fusion_conv_init,
      eco_layout=model_config.eco_layout)


def parameter_labels(params: Any, model: PASNet) -> Any:
  """'trainable' or 'frozen' for every parameter, from the model's policy.

  Frozen parameters get no update at all, weight decay included, and no
  optimizer state.
  """
  def label(path, _):
    names = [str(getattr(p, 'key', p)) for p in path]
    part, layer = names[0], names[1] if len(names) > 1 else ''
    if part == 'pose' and model.freeze_pose:
      return 'frozen'
    if (part in ('appearance', 'spatiotemporal') and layer.endswith('_bn') and
        layers.batchnorm_frozen(model.bn_policy, layer)):
      return 'frozen'
    return 'trainable'
  return jax.tree_util.tree_map_with_path(label, params)


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           base: float) -> optax.Schedule:
  boundaries = {int(fraction * config.num_train_steps): config.optimizer.decay_factor
                for fraction in config.optimizer.decay_at}
  schedule = optax.piecewise_constant_schedule(base, boundaries)
  if config.optimizer.warmup_steps:
    warmup = optax.linear_schedule(0.0, base, config.optimizer.warmup_steps)
    schedule = optax.join_schedules([warmup, schedule],
                                    [config.optimizer.warmup_steps])
  return schedule


def create_optimizer(config: ml_collections.ConfigDict, params: Any,
                     model: PASNet, schedule: optax.Schedule
                     ) -> optax.GradientTransformation:
  """ECO-pytorch's SGD: clip the gradient norm, decay kernels, momentum.

  "adam" replaces the momentum step, for training from random weights.
  """
  opt = config.optimizer
  kernels_only = jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[-1], 'key', '')) == 'kernel', params)
  if opt.name == 'sgd':
    step = optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov)
  else:
    step = optax.adam(schedule)
  trainable = optax.chain(
      optax.clip_by_global_norm(opt.clip_norm),
      optax.add_decayed_weights(opt.weight_decay, mask=kernels_only), step)
  return optax.multi_transform({'trainable': trainable,
                                'frozen': optax.set_to_zero()},
                               parameter_labels(params, model))


@dataclasses.dataclass
class DatasetInfo:
  builder: tfds.core.DatasetBuilder
  class_names: list[str]
  num_train_examples: int

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def load_dataset(dataset_config: ml_collections.ConfigDict) -> DatasetInfo:
  """The TFDS dataset of the config, built first if missing and allowed.

  With several processes, process 0 builds while the others wait.
  """
  name = dataset_config.name
  if dataset_config.config:
    name = f'{name}/{dataset_config.config}'
  data_dir = dataset_config.data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise DatasetError(f'Unknown dataset {name!r}: set --config.dataset.name '
                       'to ucf101_frames, hmdb51_frames or synthetic_actions.'
                       ) from error
  except ValueError as error:
    raise DatasetError(f'Unknown dataset config {name!r} ({error}); set '
                       '--config.dataset.config.') from error
  if not builder.is_prepared():
    if not dataset_config.build:
      raise DatasetError(f'{name} is not built in {builder.data_dir_root}; '
                         'build it (README, "Datasets") or set '
                         '--config.dataset.build=True.')
    if jax.process_index() == 0:
      logging.info('Building %s in %s', name, builder.data_dir_root)
      download_config = tfds.download.DownloadConfig(
          manual_dir=dataset_config.manual_dir or None)
      builder.download_and_prepare(download_config=download_config)
    parallel.sync(f'built {name}')
    builder = tfds.builder(name, data_dir=data_dir)
  splits = builder.info.splits
  for split in (dataset_config.train_split, dataset_config.eval_split):
    if split not in splits:
      raise DatasetError(f'{name} has no split {split!r}; it has '
                         + ', '.join(splits))
  return DatasetInfo(builder=builder,
                     class_names=list(builder.info.features['label'].names),
                     num_train_examples=splits[dataset_config.train_split].num_examples)


def eval_batches(dataset: DatasetInfo, config: ml_collections.ConfigDict,
                 clips: int | None = None, crops: int | None = None):
  """This process's evaluation batches (numpy), padded and masked."""
  return tfds.as_numpy(pipeline.make_eval_dataset(
      dataset.builder, num_frames=config.frames, image_size=config.image_size,
      batch_size=parallel.local_batch_size(config.eval_batch_size,
                                           'eval_batch_size'),
      split=config.dataset.eval_split, resize_size=config.eval_short_side,
      num_clips=clips or config.eval_clips, num_crops=crops or config.eval_crops,
      process_index=jax.process_index(), process_count=jax.process_count()))


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model: PASNet,
               optimizer: optax.GradientTransformation, accumulation_steps: int,
               mesh: jax.sharding.Mesh) -> tuple[TrainState, dict]:
  """One optimizer step over a global batch, in `accumulation_steps` parts.

  BatchNorm statistics advance once per microbatch, as they would if the
  microbatches were successive steps of the original training code.
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def microbatch_grads(params, batch_stats, micro, index):
    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': batch_stats}, micro['video'],
          train=True, rngs={'dropout': jax.random.fold_in(rng, index)},
          mutable=['batch_stats'])
      loss = jnp.mean(_cross_entropy(logits, micro['label']))
      return loss, (updates['batch_stats'], logits)
    (loss, (batch_stats, logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    correct = jnp.sum(jnp.argmax(logits, -1) == micro['label'])
    return grads, batch_stats, loss, correct

  def microbatch(x, index):
    # Microbatch j takes rows j, j + A, j + 2A, ...: every microbatch then
    # spans all devices, since rows are split over devices in order.
    x = x[index::accumulation_steps]
    return jax.lax.with_sharding_constraint(
        x, jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec(parallel.DATA_AXIS)))

  # A Python loop rather than lax.scan: XLA's CPU backend runs convolutions
  # inside a loop body several times slower than unrolled ones.
  grads_sum, batch_stats = None, state.batch_stats
  loss_sum, correct = 0.0, 0
  for index in range(accumulation_steps):
    micro = {name: microbatch(batch[name], index) for name in ('video', 'label')}
    grads, batch_stats, loss, micro_correct = microbatch_grads(
        state.params, batch_stats, micro, index)
    grads_sum = grads if grads_sum is None else jax.tree_util.tree_map(
        jnp.add, grads_sum, grads)
    loss_sum, correct = loss_sum + loss, correct + micro_correct
  grads = jax.tree_util.tree_map(lambda g: g / accumulation_steps, grads_sum)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  step_metrics = {'loss': loss_sum / accumulation_steps,
                  'accuracy': correct / batch['label'].shape[0],
                  'grad_norm': optax.global_norm(grads)}
  return new_state, step_metrics


def eval_step(variables: dict, video: jax.Array, *, model: PASNet) -> jax.Array:
  """Softmax scores (B, C) float32."""
  return jax.nn.softmax(model.apply(variables, video, train=False), axis=-1)


def evaluate(variables: dict, eval_batches, *, model: PASNet,
             mesh: jax.sharding.Mesh, eval_fn=None) -> tuple[np.ndarray, np.ndarray]:
  """Scores and labels of every real (unmasked) example, each exactly once.

  Batches may carry several views per video, (B, V, K, H, W, 3): their
  scores are averaged.
  """
  eval_fn = eval_fn or jax.jit(functools.partial(eval_step, model=model))
  all_scores, all_labels = [], []
  for local in eval_batches:
    batch = parallel.global_batch(local, mesh)
    video = batch['video']
    if video.ndim == 6:
      views = video.shape[1]
      scores = jnp.mean(jnp.stack([eval_fn(variables, video[:, v])
                                   for v in range(views)]), axis=0)
    else:
      scores = eval_fn(variables, video)
    scores, labels, mask = parallel.to_host((scores, batch['label'],
                                             batch['mask']))
    all_scores.append(np.asarray(scores)[np.asarray(mask)])
    all_labels.append(np.asarray(labels)[np.asarray(mask)])
  return np.concatenate(all_scores), np.concatenate(all_labels)


def _stage_config(config: ml_collections.ConfigDict, stage: int
                  ) -> ml_collections.ConfigDict:
  stage_config = ml_collections.ConfigDict(config.to_dict())
  if stage == 1:
    stage_config.model.fusion = 'A'
    stage_config.num_train_steps = config.stage1.num_train_steps
    stage_config.optimizer.learning_rate = config.stage1.learning_rate
  return stage_config


def _check_workdir(workdir: str) -> None:
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


def _run_identity(config: ml_collections.ConfigDict, num_classes: int) -> dict:
  identity = {key: _lookup(config, key) for key in IDENTITY_KEYS}
  identity['num_classes'] = num_classes
  return identity


def _previous_identity(workdir: str) -> dict | None:
  identity = checkpoints.read_format(workdir)
  path = os.path.join(workdir, 'config.json')
  if identity is None and os.path.exists(path):
    # A run from before checkpoint_format.json: its config.json says enough.
    with open(path) as f:
      saved = ml_collections.ConfigDict(json.load(f))
    identity = {}
    for key in IDENTITY_KEYS:
      try:
        identity[key] = _lookup(saved, key)
      except (KeyError, AttributeError):
        continue
  return identity


def _claim_workdir(config: ml_collections.ConfigDict, workdir: str,
                   num_classes: int) -> None:
  """Refuses a workdir of another run; records this run's config and identity."""
  identity = _run_identity(config, num_classes)
  previous = _previous_identity(workdir) or {}
  differing = [key for key in identity
               if key in previous and previous[key] != identity[key]]
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


class _SignalFlag:
  """Remembers SIGTERM/SIGINT so the loop can checkpoint before exiting."""

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _Progress:
  """Console and TensorBoard logging from process 0."""

  def __init__(self, workdir: str, total_steps: int, clips_per_step: int,
               start_step: int):
    self.total, self.clips = total_steps, clips_per_step
    self.start_step, self.start_time = start_step, time.time()
    self.last_step, self.last_time = start_step, self.start_time
    self.writer = None
    if jax.process_index() == 0:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self.writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if self.writer is None:
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with self.writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)
    self.writer.flush()

  def train(self, step: int, values: dict[str, float], lr: float,
            steps_per_epoch: float) -> None:
    now = time.time()
    steps_per_second = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    done = step - self.start_step
    eta = (self.total - step) * (now - self.start_time) / max(done, 1)
    logging.info('step %d/%d (epoch %.2f) loss %.4f acc %.3f lr %.2e | '
                 '%.2f steps/s %.1f clips/s | ETA %s', step, self.total,
                 step / steps_per_epoch, values['loss'], values['accuracy'], lr,
                 steps_per_second, steps_per_second * self.clips,
                 time.strftime('%H:%M:%S', time.gmtime(eta)))
    self.scalars(step, {f'train/{k}': v for k, v in values.items()} |
                 {'train/learning_rate': lr, 'train/steps_per_second': steps_per_second,
                  'train/clips_per_second': steps_per_second * self.clips})


def _write_results(workdir: str, summary: dict, class_names, extra: dict) -> dict:
  results = {k: v for k, v in summary.items() if k != 'confusion_matrix'}
  results.update(extra)
  if jax.process_index() == 0:
    metrics_lib.write_confusion_matrix(
        summary['confusion_matrix'], class_names, workdir,
        title=f'{extra.get("fusion", "")} step {extra.get("step", "")}')
    checkpoints.write_json_atomically(os.path.join(workdir, 'results.json'), results)
  return results


def create_training(config: ml_collections.ConfigDict, model: PASNet,
                    variables: dict, schedule: optax.Schedule,
                    mesh: jax.sharding.Mesh):
  """(initial TrainState on the devices, jitted step(state, batch))."""
  optimizer = create_optimizer(config, variables['params'], model, schedule)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                     batch_stats=variables['batch_stats'],
                     opt_state=optimizer.init(variables['params']),
                     rng=jax.random.PRNGKey(config.seed))
  step_fn = jax.jit(functools.partial(
      train_step, model=model, optimizer=optimizer,
      accumulation_steps=config.accumulation_steps, mesh=mesh),
                    donate_argnums=(0,))
  return jax.device_put(state, parallel.replicated_sharding(mesh)), step_fn


def train_stage(config: ml_collections.ConfigDict, workdir: str,
                sources: list[tuple[str, dict]], dataset: DatasetInfo,
                mesh: jax.sharding.Mesh) -> dict:
  """Trains one stage in `workdir`, resuming if it holds checkpoints."""
  _check_workdir(workdir)
  _claim_workdir(config, workdir, dataset.num_classes)
  model = create_model(config.model, dataset.num_classes)
  frames, size = config.frames, config.image_size
  local_batch = parallel.local_batch_size(config.batch_size)
  schedule = learning_rate_schedule(config, config.optimizer.learning_rate)

  fresh = init_variables(model, config.seed, (1, frames, size, size, 3))
  variables, report = checkpoints.merge_initial(
      fresh, _drop_mismatched_classifier(sources, dataset.num_classes))
  for line in report:
    logging.info('init: %s', line)
  state, step_fn = create_training(config, model, variables, schedule, mesh)

  manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
  batches_taken = 0
  latest = manager.latest_step()
  if latest is not None:
    state, data_state = checkpoints.restore(manager, latest,
                                            checkpoints.abstract_like(state))
    batches_taken = int(data_state['batches_taken'])
    logging.info('Resuming %s from step %d (checkpoint %s/%d)', workdir, latest,
                 manager.directory, latest)
  start_step = int(state.step)

  eval_fn = jax.jit(functools.partial(eval_step, model=model))

  def run_eval(state) -> dict:
    scores, labels = evaluate({'params': state.params,
                               'batch_stats': state.batch_stats},
                              eval_batches(dataset, config), model=model,
                              mesh=mesh, eval_fn=eval_fn)
    return metrics_lib.summarize(scores, labels, dataset.class_names)

  train_batches = iter(tfds.as_numpy(pipeline.make_train_dataset(
      dataset.builder, num_frames=frames, image_size=size,
      batch_size=local_batch, seed=config.seed,
      split=config.dataset.train_split, process_index=jax.process_index(),
      process_count=jax.process_count(), start_batch=batches_taken)))
  steps_per_epoch = dataset.num_train_examples / config.batch_size
  progress = _Progress(workdir, config.num_train_steps, config.batch_size,
                       start_step)
  logging.info('Training %s (fusion %s) for %d steps (%.1f epochs of %d clips), '
               'batch %d on %d devices, %d processes', workdir,
               config.model.fusion, config.num_train_steps,
               config.num_train_steps / steps_per_epoch,
               dataset.num_train_examples, config.batch_size, jax.device_count(),
               jax.process_count())

  summary = None
  # The first step compiles: trace from the second one on.
  tracer = profiling.StepTracer(os.path.join(workdir, 'profile'),
                                first_step=start_step + 2,
                                steps=config.profile_steps,
                                enabled=jax.process_index() == 0)
  with _SignalFlag() as signals:
    for step in range(start_step + 1, config.num_train_steps + 1):
      tracer.before(step)
      local = next(train_batches)
      local.pop('mask')
      state, step_metrics = step_fn(state, parallel.global_batch(local, mesh))
      tracer.after(step, step_metrics)
      loss = float(step_metrics['loss'])
      if not np.isfinite(loss):
        checkpoints.wait(manager)
        kept = manager.latest_step()
        raise Diverged(
            f'Loss became {loss} at step {step}; stopped. The last good '
            f'checkpoint is step {kept} in {manager.directory}. Lower '
            '--config.optimizer.learning_rate or check the input data.')
      if step % config.log_every_steps == 0 or step == config.num_train_steps:
        progress.train(step, {k: float(v) for k, v in step_metrics.items()},
                       float(schedule(step - 1)), steps_per_epoch)
      evaluated = None
      if step % config.eval_every_steps == 0 or step == config.num_train_steps:
        summary = run_eval(state)
        evaluated = {'top1': summary['top1'], 'top5': summary['top5'],
                     'mean_class_accuracy': summary['mean_class_accuracy']}
        logging.info('eval at step %d: top-1 %.4f top-5 %.4f mean class %.4f '
                     '(%d videos)', step, summary['top1'], summary['top5'],
                     summary['mean_class_accuracy'], summary['num_videos'])
        progress.scalars(step, {f'eval/{k}': v for k, v in evaluated.items()})
      if (evaluated or step % config.checkpoint_every_steps == 0 or
          signals.received):
        checkpoints.save(manager, step, state,
                         {'batches_taken': batches_taken + step - start_step},
                         evaluated)
      if signals.received:
        checkpoints.wait(manager)
        raise Preempted(f'{signals.received} received: saved step {step} in '
                        f'{manager.directory}; run the same command to resume.')
  tracer.close()
  checkpoints.wait(manager)

  if summary is None:
    summary = run_eval(state)
  best = checkpoints.best_step(manager)
  if best is not None and best != int(state.step):
    state, _ = checkpoints.restore(manager, best, checkpoints.abstract_like(state))
    summary = run_eval(state)
  manager.close()
  results = _write_results(workdir, summary, dataset.class_names, {
      'step': int(state.step), 'fusion': config.model.fusion, 'frames': frames,
      'image_size': size, 'dataset': config.dataset.name,
      'dataset_config': config.dataset.config,
      'split': config.dataset.eval_split,
      'class_names': list(dataset.class_names)})
  logging.info('%s: top-1 %.4f top-5 %.4f mean class %.4f over %d videos '
               '(step %d)', workdir, results['top1'], results['top5'],
               results['mean_class_accuracy'], results['num_videos'],
               results['step'])
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates as `config` says; returns the final results."""
  validate_config(config)
  parallel.initialize_distributed(config.distributed)
  validate_devices(config)
  try:
    return _train_and_evaluate(config, os.path.abspath(workdir))
  except jax.errors.JaxRuntimeError as error:
    if jax.process_count() == 1:
      raise
    raise PeerLost(
        f'An operation across the {jax.process_count()} processes failed '
        f'({checkpoints.error_summary(error)}): another process has most '
        'likely died; see its log. Start every process again with the same '
        'command to resume from the last complete checkpoint.') from error


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  _check_workdir(workdir)
  mesh = parallel.make_mesh()
  dataset = load_dataset(config.dataset)

  if config.strategy == 'conventional':
    sources = _initial_sources(config, 2, workdir)
    return train_stage(config, workdir, sources, dataset, mesh)

  stage1_dir = os.path.join(workdir, 'stage1')
  stage1_config = _stage_config(config, 1)
  stage1 = train_stage(stage1_config, stage1_dir,
                       _initial_sources(stage1_config, 1, workdir), dataset, mesh)
  parallel.sync('stage1 done')
  stage2 = train_stage(config, os.path.join(workdir, 'stage2'),
                       _initial_sources(config, 2, workdir), dataset, mesh)
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
