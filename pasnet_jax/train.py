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
import os
import signal
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax


from pasnet_jax import checkpoints
from pasnet_jax import config_checks
from pasnet_jax import evaluation
from pasnet_jax import event_log
from pasnet_jax import initial_weights
from pasnet_jax import metrics as metrics_lib
from pasnet_jax import parallel
from pasnet_jax import profiling
from pasnet_jax import workdir as workdir_lib
from pasnet_jax.data import datasets
from pasnet_jax.data import pipeline
from pasnet_jax.errors import Diverged, PeerLost, Preempted
from pasnet_jax.models import layers
from pasnet_jax.models import transform_conv
from pasnet_jax.models.pasnet import create_model, pose_transforms, PASNet



@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # Raw uint32 key data, so that it checkpoints as an array.
  # The plateau schedule's decays so far, as a factor on every update.
  lr_scale: jax.Array


def parameter_labels(params: Any, model: PASNet) -> Any:
  """The group of every parameter, as ECO-pytorch's get_optim_policies
  forms them: 'weight' (kernels), 'bias', 'batchnorm' (scale and offset),
  or 'frozen' (no update at all, weight decay included, and no optimizer
  state) by the model's policy.
  """
  def label(path, _):
    names = [str(getattr(p, 'key', p)) for p in path]
    part, layer = names[0], names[1] if len(names) > 1 else ''
    if part == 'pose' and model.freeze_pose:
      return 'frozen'
    if part in ('appearance', 'spatiotemporal') and layer.endswith('_bn'):
      return ('frozen' if layers.batchnorm_frozen(model.bn_policy, layer)
              else 'batchnorm')
    return 'weight' if names[-1] == 'kernel' else 'bias'
  return jax.tree_util.tree_map_with_path(label, params)


def learning_rate_schedule(config: ml_collections.ConfigDict, base: float,
                           num_steps: int) -> optax.Schedule:
  """The warm-up, then `base` with the "step" schedule's decays.

  The "plateau" schedule's decays depend on evaluations: they scale the
  updates through TrainState.lr_scale instead.
  """
  opt = config.optimizer
  warmup_steps = opt.warmup_steps
  decay_at = opt.decay_at if opt.schedule == 'step' else ()
  # join_schedules counts the second schedule's steps from the boundary.
  boundaries = {int(fraction * num_steps) - warmup_steps: opt.decay_factor
                for fraction in decay_at}
  schedule = optax.piecewise_constant_schedule(base, boundaries)
  if warmup_steps:
    warmup = optax.linear_schedule(0.0, base, warmup_steps)
    schedule = optax.join_schedules([warmup, schedule], [warmup_steps])
  return schedule


def create_optimizer(config: ml_collections.ConfigDict, params: Any,
                     model: PASNet, schedule: optax.Schedule
                     ) -> optax.GradientTransformation:
  """ECO-pytorch's SGD: the summed gradient's norm clipped, then per group
  weight decay on weights only and biases at bias_lr_multiplier times the
  learning rate, then (Nesterov) momentum.

  "adam" replaces the momentum step, for training from random weights.
  """
  opt = config.optimizer

  def step(multiplier: float) -> optax.GradientTransformation:
    rate = lambda count: multiplier * schedule(count)
    if opt.name == 'sgd':
      return optax.sgd(rate, momentum=opt.momentum, nesterov=opt.nesterov)
    return optax.adam(rate)

  return optax.chain(
      optax.clip_by_global_norm(opt.clip_norm),
      optax.multi_transform(
          {'weight': optax.chain(optax.add_decayed_weights(opt.weight_decay),
                                 step(1.0)),
           'bias': step(opt.bias_lr_multiplier),
           'batchnorm': step(1.0),
           'frozen': optax.set_to_zero()},
          parameter_labels(params, model)))


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_step(state: TrainState, batch: dict[str, jax.Array],
               transforms: dict | None = None, *, model: PASNet,
               optimizer: optax.GradientTransformation, schedule: optax.Schedule,
               accumulation_steps: int, mesh: jax.sharding.Mesh
               ) -> tuple[TrainState, dict]:
  """One optimizer step over a global batch, in `accumulation_steps` parts.

  `transforms`: the frozen pose branch's prepared kernel transforms
  (pasnet.pose_transforms), an argument rather than a constant of the
  compiled step, which would otherwise hold their 1.7 GB.

  BatchNorm statistics advance once per microbatch, as they would if the
  microbatches were successive steps of the original training code.
  """
  rng = jax.random.fold_in(state.rng, state.step)

  def microbatch_grads(params, batch_stats, micro, index):
    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': batch_stats, **(transforms or {})},
          micro['video'],
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
  # As a lower learning rate would: momentum buffers hold no learning rate.
  updates = jax.tree_util.tree_map(lambda u: u * state.lr_scale, updates)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  loss = loss_sum / accumulation_steps
  step_metrics = {'loss': loss,
                  'accuracy': correct / batch['label'].shape[0],
                  'grad_norm': optax.global_norm(grads),
                  'learning_rate': schedule(state.step) * state.lr_scale,
                  # Checked on the host before anything is saved. The
                  # weights were finite, so finite updates keep them so;
                  # the frozen parts' updates are zeros, which XLA folds,
                  # so this reads the trained weights' updates only.
                  'finite': jnp.isfinite(loss) & jnp.isfinite(
                      optax.global_norm(updates))}
  return new_state, step_metrics


def _stage_config(config: ml_collections.ConfigDict, stage: int
                  ) -> ml_collections.ConfigDict:
  stage_config = ml_collections.ConfigDict(config.to_dict())
  if stage == 1:
    stage_config.model.fusion = 'A'
    stage_config.num_train_steps = config.stage1.num_train_steps
    stage_config.num_epochs = config.stage1.num_epochs
    stage_config.optimizer.learning_rate = config.stage1.learning_rate
  return stage_config


@dataclasses.dataclass
class Plateau:
  """The authors' learning-rate rule: x decay_factor each time validation
  top-1 has not improved for `patience` evaluations in a row. Saved with
  every checkpoint, so that a resumed run decays as an uninterrupted one."""
  best: float = -1.0
  evaluations_without_improvement: int = 0
  decays: int = 0

  def update(self, top1: float, patience: int) -> bool:
    """Records an evaluation; True when the learning rate decays now."""
    if top1 > self.best:
      self.best, self.evaluations_without_improvement = top1, 0
      return False
    self.evaluations_without_improvement += 1
    if self.evaluations_without_improvement < patience:
      return False
    self.evaluations_without_improvement = 0
    self.decays += 1
    return True

  def lr_scale(self, config: ml_collections.ConfigDict) -> float:
    return config.optimizer.decay_factor ** self.decays


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
      self.writer = event_log.EventLog(os.path.join(workdir, 'tensorboard'))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if self.writer is not None:
      self.writer.scalars(step, values)

  def train(self, step: int, values: dict[str, float],
            steps_per_epoch: float) -> None:
    now = time.time()
    steps_per_second = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    done = step - self.start_step
    eta = (self.total - step) * (now - self.start_time) / max(done, 1)
    logging.info('step %d/%d (epoch %.2f) loss %.4f acc %.3f lr %.2e | '
                 '%.2f steps/s %.1f clips/s | ETA %s', step, self.total,
                 step / steps_per_epoch, values['loss'], values['accuracy'],
                 values['learning_rate'],
                 steps_per_second, steps_per_second * self.clips,
                 time.strftime('%H:%M:%S', time.gmtime(eta)))
    self.scalars(step, {f'train/{k}': v for k, v in values.items()} |
                 {'train/steps_per_second': steps_per_second,
                  'train/clips_per_second': steps_per_second * self.clips})


class _StepMetrics:
  """The steps' metrics, kept on the devices between the loop's waits.

  `fetch_and_check` brings every step's metrics since the last call to the
  host at once and stops the run at a non-finite loss, so that no state
  after it is evaluated or saved.
  """

  def __init__(self, manager):
    self._manager = manager
    self._on_device: list[tuple[int, dict]] = []
    self._unlogged: list[dict[str, float]] = []

  def add(self, step: int, step_metrics: dict) -> None:
    self._on_device.append((step, step_metrics))

  def fetch_and_check(self) -> None:
    if not self._on_device:
      return
    steps = [step for step, _ in self._on_device]
    fetched = jax.device_get([values for _, values in self._on_device])
    self._on_device = []
    for step, values in zip(steps, fetched):
      if not values.pop('finite'):
        checkpoints.wait(self._manager)
        kept = self._manager.latest_step()
        raise Diverged(
            f'The loss ({float(values["loss"])}) or the weights became '
            f'non-finite at step {step}; stopped (steps {steps[0]} to '
            f'{steps[-1]} were checked together). The last good checkpoint '
            f'is step {kept} in {self._manager.directory}. Lower '
            '--config.optimizer.learning_rate or check the input data.')
      self._unlogged.append({k: float(v) for k, v in values.items()})

  def logged(self) -> dict[str, float]:
    """Each metric's mean over the steps since the last call; the learning
    rate of the last of them."""
    means = {name: float(np.mean([values[name] for values in self._unlogged]))
             for name in self._unlogged[0]}
    means['learning_rate'] = self._unlogged[-1]['learning_rate']
    self._unlogged = []
    return means


def create_training(config: ml_collections.ConfigDict, model: PASNet,
                    variables: dict, schedule: optax.Schedule,
                    mesh: jax.sharding.Mesh):
  """(initial TrainState on the devices, jitted step(state, batch, transforms)).

  Variables of jax.ShapeDtypeStruct give an abstract state: enough to lower
  the step without any data (benchmarks/model.py counts its FLOPs so).
  """
  optimizer = create_optimizer(config, variables['params'], model, schedule)

  def initial_state(variables):
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                      batch_stats=variables['batch_stats'],
                      opt_state=optimizer.init(variables['params']),
                      rng=jax.random.PRNGKey(config.seed),
                      lr_scale=jnp.ones((), jnp.float32))
  step_fn = jax.jit(functools.partial(
      train_step, model=model, optimizer=optimizer, schedule=schedule,
      accumulation_steps=config.accumulation_steps, mesh=mesh),
                    donate_argnums=(0,))
  replicated = parallel.replicated_sharding(mesh)
  # The optimizer state is made on the devices: only the weights cross over.
  make_state = jax.jit(initial_state, out_shardings=replicated,
                       donate_argnums=(0,))
  if isinstance(jax.tree_util.tree_leaves(variables)[0], jax.ShapeDtypeStruct):
    return jax.eval_shape(make_state, variables), step_fn
  return make_state(jax.device_put(variables, replicated)), step_fn


def _pose_transforms(model: PASNet, params: dict, size: int, train: bool
                     ) -> dict:
  """pasnet.pose_transforms of `params` on size x size frames, logged."""
  start = time.monotonic()
  transforms = pose_transforms(model, {'params': params}, size, size, train)
  if transforms:
    logging.info("OpenPose's frozen convolutions run through kernel "
                 'transforms (FFT for 7 x 7, Winograd for 3 x 3, where they '
                 'pay): %.2f GB prepared in %.1f s (model.pose_conv=%s)',
                 transform_conv.total_bytes(transforms) / 1e9,
                 time.monotonic() - start, model.pose_conv)
  return transforms


def train_stage(config: ml_collections.ConfigDict, workdir: str, stage: int,
                run_dir: str, dataset: datasets.DatasetInfo,
                mesh: jax.sharding.Mesh) -> dict:
  """Trains one stage in `workdir`, resuming if it holds checkpoints.

  `stage` is 1 or 2 (the conventional method's single stage is stage 2);
  `run_dir` is the run's directory, where stage 2 finds stage 1.
  """
  workdir_lib.check_workdir(workdir)
  # As the authors' loop: an epoch's last, incomplete batch is not taken.
  steps_per_epoch = max(dataset.num_train_examples // config.batch_size, 1)
  num_steps = config.num_train_steps or max(
      round(config.num_epochs * steps_per_epoch), 1)
  finished = workdir_lib.finished_results(config, workdir, num_steps,
                                          dataset.num_classes)
  if finished is not None:
    logging.info('%s has finished its %d steps: top-1 %.4f top-5 %.4f mean '
                 'class %.4f over %d videos (step %d). To train on, raise '
                 '--config.num_epochs (or num_train_steps).', workdir,
                 num_steps, finished['top1'], finished['top5'],
                 finished['mean_class_accuracy'], finished['num_videos'],
                 finished['step'])
    return finished
  sources = initial_weights.sources_for(config, stage, run_dir)
  # The weights' own ECO layout; the config's only for random weights.
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.eco_layout = initial_weights.eco_layout(sources,
                                                       config.model.eco_layout)
  workdir_lib.claim_workdir(config, workdir, dataset.num_classes)
  model = create_model(config.model, dataset.num_classes)
  frames, size = config.frames, config.image_size
  local_batch = parallel.local_batch_size(config.batch_size)
  eval_every = config.eval_every_steps or max(
      round(config.eval_every_epochs * steps_per_epoch), 1)
  schedule = learning_rate_schedule(config, config.optimizer.learning_rate,
                                    num_steps)

  variables = initial_weights.initial_variables(
      model, sources, config.seed, (1, frames, size, size, 3))
  logging.info('ECO layout: %s', model.eco_layout)
  state, step_fn = create_training(config, model, variables, schedule, mesh)

  manager = checkpoints.create_manager(workdir, config.keep_checkpoints)
  batches_taken = 0
  plateau = Plateau()
  latest = manager.latest_step()
  if latest is not None:
    state, data_state = checkpoints.restore(manager, latest,
                                            checkpoints.abstract_like(state))
    batches_taken = int(data_state['batches_taken'])
    plateau = Plateau(**data_state['plateau'])
    logging.info('Resuming %s from step %d (checkpoint %s/%d)', workdir, latest,
                 manager.directory, latest)
  start_step = int(jax.device_get(state.step))
  # From the weights restored, not the initial ones: a frozen pose branch
  # keeps them for every step and evaluation of the stage.
  transforms = _pose_transforms(model, state.params, size, train=True)

  eval_fn = jax.jit(functools.partial(evaluation.eval_step, model=model))

  def run_eval(state) -> dict:
    eval_transforms = (transforms if model.freeze_pose else
                       _pose_transforms(model, state.params, size, train=False))
    scores, labels = evaluation.evaluate(
        {'params': state.params, 'batch_stats': state.batch_stats,
         **eval_transforms},
        evaluation.eval_batches(dataset, config), model=model, mesh=mesh,
        eval_fn=eval_fn)
    return metrics_lib.summarize(scores, labels, dataset.class_names)

  train_batches = pipeline.make_train_dataset(
      dataset.prepared, num_frames=frames, image_size=size,
      batch_size=local_batch, seed=config.seed,
      split=config.dataset.train_split, process_index=jax.process_index(),
      process_count=jax.process_count(), start_batch=batches_taken,
      num_workers=config.data_workers)
  progress = _Progress(workdir, num_steps, config.batch_size, start_step)
  logging.info('Training %s (fusion %s) for %d steps (%.1f epochs of %d clips), '
               'batch %d on %d devices, %d processes, evaluating every %d '
               'steps', workdir, config.model.fusion, num_steps,
               num_steps / steps_per_epoch, dataset.num_train_examples,
               config.batch_size, jax.device_count(), jax.process_count(),
               eval_every)

  summary = None
  # The first step compiles: trace from the second one on.
  tracer = profiling.StepTracer(os.path.join(workdir, 'profile'),
                                first_step=start_step + 2,
                                steps=config.profile_steps,
                                enabled=jax.process_index() == 0)
  metrics = _StepMetrics(manager)
  with _SignalFlag() as signals, parallel.DevicePrefetch(
      train_batches, mesh) as batches:
    for step in range(start_step + 1, num_steps + 1):
      tracer.before(step)
      state, step_metrics = step_fn(state, next(batches), transforms)
      tracer.after(step, step_metrics)
      metrics.add(step, step_metrics)
      log_now = step % config.log_every_steps == 0 or step == num_steps
      eval_now = step % eval_every == 0 or step == num_steps
      # Read once: a signal that lands between the save and the stop below
      # must wait for the next step's save, not stop after none.
      stop = signals.received
      save_now = (eval_now or step % config.checkpoint_every_steps == 0 or
                  stop)
      if log_now or eval_now or save_now:
        # The only points where the loop waits for the device.
        metrics.fetch_and_check()
      if log_now:
        progress.train(step, metrics.logged(), steps_per_epoch)
      evaluated = None
      if eval_now:
        summary = run_eval(state)
        evaluated = {'top1': summary['top1'], 'top5': summary['top5'],
                     'mean_class_accuracy': summary['mean_class_accuracy']}
        logging.info('eval at step %d: top-1 %.4f top-5 %.4f mean class %.4f '
                     '(%d videos)', step, summary['top1'], summary['top5'],
                     summary['mean_class_accuracy'], summary['num_videos'])
        progress.scalars(step, {f'eval/{k}': v for k, v in evaluated.items()})
        if config.optimizer.schedule == 'plateau' and plateau.update(
            summary['top1'], config.optimizer.plateau_patience):
          logging.info('top-1 has not improved on %.4f for %d evaluations: '
                       'learning rate x%g', plateau.best,
                       config.optimizer.plateau_patience,
                       plateau.lr_scale(config))
          state = state.replace(lr_scale=jax.device_put(
              np.float32(plateau.lr_scale(config)), state.lr_scale.sharding))
      if save_now:
        checkpoints.save(manager, step, state,
                         {'batches_taken': batches_taken + step - start_step,
                          'plateau': dataclasses.asdict(plateau)},
                         evaluated)
      if stop:
        checkpoints.wait(manager)
        raise Preempted(f'{stop} received: saved step {step} in '
                        f'{manager.directory}; run the same command to resume.')
  tracer.close()
  checkpoints.wait(manager)

  if summary is None:
    summary = run_eval(state)
  final_step = int(jax.device_get(state.step))
  best = checkpoints.best_step(manager)
  if best is not None and best != final_step:
    state, _ = checkpoints.restore(manager, best, checkpoints.abstract_like(state))
    summary, final_step = run_eval(state), best
  manager.close()
  results = workdir_lib.write_results(workdir, summary, dataset.class_names, {
      'step': final_step, 'num_train_steps': num_steps,
      'fusion': config.model.fusion, 'frames': frames,
      'image_size': size, 'dataset': config.dataset.name,
      'dataset_config': config.dataset.config,
      'split': config.dataset.eval_split,
      'class_names': list(dataset.class_names)})
  logging.info('%s: top-1 %.4f top-5 %.4f mean class %.4f over %d videos '
               '(step %d)', workdir, results['top1'], results['top5'],
               results['mean_class_accuracy'], results['num_videos'],
               results['step'])
  return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: datasets.DatasetInfo | None = None) -> dict:
  """Trains and evaluates as `config` says; returns the final results.

  `dataset` replaces the one config.dataset names (which is then not
  looked up or built).
  """
  config_checks.check_config(config)
  parallel.initialize_distributed(config.distributed)
  config_checks.check_devices(config)
  # After the checks, so that an error is the first thing a user reads.
  logging.info('Config:\n%s', config)
  logging.info('JAX %s backend: %d %s devices over %d processes (%d here)',
               jax.default_backend(), jax.device_count(),
               jax.devices()[0].device_kind, jax.process_count(),
               jax.local_device_count())
  try:
    return _train_and_evaluate(config, os.path.abspath(workdir), dataset)
  except jax.errors.JaxRuntimeError as error:
    if jax.process_count() == 1:
      raise
    raise PeerLost(
        f'An operation across the {jax.process_count()} processes failed '
        f'({checkpoints.error_summary(error)}): another process has most '
        'likely died; see its log. Start every process again with the same '
        'command to resume from the last complete checkpoint.') from error


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        dataset: datasets.DatasetInfo | None) -> dict:
  workdir_lib.check_workdir(workdir)
  mesh = parallel.make_mesh()
  if dataset is None:
    dataset = datasets.load_dataset(config.dataset)

  if config.strategy == 'conventional':
    return train_stage(config, workdir, 2, workdir, dataset, mesh)

  stage1 = train_stage(_stage_config(config, 1), os.path.join(workdir, 'stage1'),
                       1, workdir, dataset, mesh)
  parallel.sync('stage1 done')
  stage2 = train_stage(config, os.path.join(workdir, 'stage2'), 2, workdir,
                       dataset, mesh)
  return workdir_lib.write_twice_results(workdir, stage1, stage2)
