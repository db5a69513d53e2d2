"""Training end to end on a tiny generated dataset: resume, NaN stop,
twice-finetune; and the step itself: accumulated microbatches, frozen
parameters."""

import json
import logging
import os
import signal

import jax
import numpy as np
import pytest

from pasnet_jax import checkpoints
from pasnet_jax import errors
from pasnet_jax import parallel
from pasnet_jax import train
from pasnet_jax.models import create_model
from pasnet_jax.models.pasnet import init_variables, pose_transforms
from tests import run_helpers


def params_of(workdir, which='latest'):
  return jax.tree_util.tree_leaves(checkpoints.load_variables(workdir, which))


def test_resumed_run_ends_where_an_uninterrupted_one_does(uninterrupted, tmp_path,
                                                          caplog, tiny_dataset):
  workdir = str(tmp_path)
  train.train_and_evaluate(run_helpers.small_config(num_train_steps=2), workdir, tiny_dataset)
  early = params_of(workdir)
  caplog.set_level(logging.INFO)
  train.train_and_evaluate(run_helpers.small_config(), workdir, tiny_dataset)
  assert 'Resuming' in caplog.text and 'from step 2' in caplog.text
  resumed, straight = params_of(workdir), params_of(uninterrupted[0])
  for a, b in zip(resumed, straight):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The check has teeth: training moved the weights away from the 2-step run.
  assert any(not np.allclose(a, b) for a, b in zip(early, straight))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_dataset):
  config = run_helpers.small_config(num_train_steps=6, checkpoint_every_steps=1)
  config.optimizer.learning_rate = 1e12
  config.optimizer.clip_norm = 1e30
  with pytest.raises(errors.Diverged, match=r'at step (\d+)') as failure:
    train.train_and_evaluate(config, str(tmp_path), tiny_dataset)
  step = int(failure.value.args[0].split('at step ')[1].split(';')[0])
  kept = checkpoints.create_manager(str(tmp_path), 3).latest_step()
  assert kept == step - 1
  state = checkpoints.load_variables(str(tmp_path), 'latest')
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(state))


def test_a_finished_run_reports_its_results_instead_of_training_again(
    twice, caplog, tiny_dataset):
  with open(os.path.join(twice, 'results.json')) as f:
    before = json.load(f)
  caplog.set_level(logging.INFO)
  config = run_helpers.small_config(strategy='twice', num_train_steps=1)
  config.model.fusion = 'A+pool(I)+pool(F)'
  results = train.train_and_evaluate(config, twice, tiny_dataset)
  assert caplog.text.count('has finished its') == 2
  assert 'Training' not in caplog.text and 'eval at step' not in caplog.text
  assert results == before


def test_the_loop_waits_for_metrics_only_to_log_evaluate_or_save(
    tmp_path, tiny_dataset, monkeypatch):
  fetched = []
  fetch_and_check = train._StepMetrics.fetch_and_check

  def recorded(self):
    fetched.append([step for step, _ in self._on_device])
    fetch_and_check(self)
  monkeypatch.setattr(train._StepMetrics, 'fetch_and_check', recorded)
  config = run_helpers.small_config(num_train_steps=7, log_every_steps=3,
                                    checkpoint_every_steps=5)
  train.train_and_evaluate(config, str(tmp_path), tiny_dataset)
  assert fetched == [[1, 2, 3], [4, 5], [6], [7]]


def test_twice_finetune_starts_stage_2_from_stage_1(twice):
  with open(os.path.join(twice, 'stage1', 'config.json')) as f:
    assert json.load(f)['model']['fusion'] == 'A'
  with open(os.path.join(twice, 'results.json')) as f:
    results = json.load(f)
  assert results['fusion'] == 'A+pool(I)+pool(F)'
  assert results['stage1']['step'] == 2 and results['step'] == 1
  stage1 = checkpoints.load_variables(os.path.join(twice, 'stage1'))
  stage2 = checkpoints.load_variables(os.path.join(twice, 'stage2'))
  assert 'pose' in stage2['params'] and 'pose' not in stage1['params']
  # One step of stage 2 moved the 3D part only a little from stage 1's.
  before = stage1['params']['spatiotemporal']['res5b_2']['kernel']
  after = stage2['params']['spatiotemporal']['res5b_2']['kernel']
  assert np.max(np.abs(after - before)) < 0.05 * np.max(np.abs(before))


def one_step(config, variables, batch, transforms=None):
  """(state after one step of `config` from `variables` on `batch`, metrics)."""
  model = create_model(config.model, run_helpers.NUM_TINY_CLASSES)
  mesh = parallel.make_mesh()
  schedule = train.learning_rate_schedule(config, config.optimizer.learning_rate,
                                          config.num_train_steps)
  state, step = train.create_training(config, model, variables, schedule, mesh)
  state, step_metrics = step(state, parallel.global_batch(batch, mesh),
                             transforms)
  return jax.device_get(state), jax.device_get(step_metrics)


def random_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  return {'video': rng.uniform(0, 255, (config.batch_size, config.frames,
                                        config.image_size, config.image_size,
                                        3)).astype(np.float32),
          'label': rng.integers(0, run_helpers.NUM_TINY_CLASSES,
                                config.batch_size).astype(np.int32)}


@pytest.mark.slow
def test_the_step_through_prepared_pose_spectra_trains_as_the_direct_one():
  """At 96 x 96 the frozen pose branch's 7 x 7 convolutions go through the
  FFT with spectra the loop prepares once (pasnet.pose_transforms); the
  step must compute what the direct convolutions do."""
  config = run_helpers.small_config(**{
      'model.fusion': 'A+pool(I)+pool(F)', 'model.dropout': 0.0,
      'image_size': 96, 'eval_short_side': 96, 'batch_size': 2,
      'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.1})
  model = create_model(config.model, run_helpers.NUM_TINY_CLASSES)
  variables = init_variables(model, 0, (1, config.frames, 96, 96, 3))
  transforms = pose_transforms(model, variables, 96, 96, train=True)
  assert transforms, 'auto should take the FFT at 96 x 96 in float32 on a CPU'
  batch = random_batch(config)
  (fft_state, fft_metrics), (direct_state, direct_metrics) = (
      one_step(config, variables, batch, transforms),
      one_step(config, variables, batch))
  np.testing.assert_allclose(fft_metrics['loss'], direct_metrics['loss'],
                             rtol=1e-4)
  np.testing.assert_allclose(fft_metrics['grad_norm'],
                             direct_metrics['grad_norm'], rtol=1e-3)
  pairs = [(fft, direct) for part in ('appearance', 'spatiotemporal',
                                       'classifier')
           for fft, direct in zip(
               jax.tree_util.tree_leaves(fft_state.params[part]),
               jax.tree_util.tree_leaves(direct_state.params[part]))]
  for fft, direct in pairs:
    np.testing.assert_allclose(fft, direct, rtol=1e-3, atol=1e-5)
  # Rounded differently, so the spectra were taken, not ignored.
  assert any(not np.array_equal(fft, direct) for fft, direct in pairs)


@pytest.fixture(scope='module')
def one_batch_and_four_microbatches():
  # Frozen BatchNorm (running statistics) and no dropout: the only case in
  # which four microbatches compute what one batch of the same clips does.
  config = run_helpers.small_config(**{
      'model.bn_policy': 'frozen', 'model.dropout': 0.0,
      'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.1})
  model = create_model(config.model, run_helpers.NUM_TINY_CLASSES)
  variables = init_variables(model, 0, (1, config.frames, config.image_size,
                                        config.image_size, 3))
  batch = random_batch(config)
  config.accumulation_steps = 1
  whole = one_step(config, variables, batch)
  config.accumulation_steps = 4
  accumulated = one_step(config, variables, batch)
  return variables, whole, accumulated


def test_four_microbatches_update_as_one_batch(one_batch_and_four_microbatches):
  variables, (whole, whole_metrics), (accumulated, accumulated_metrics) = (
      one_batch_and_four_microbatches)
  np.testing.assert_allclose(accumulated_metrics['loss'], whole_metrics['loss'],
                             rtol=1e-5)
  np.testing.assert_allclose(accumulated_metrics['grad_norm'],
                             whole_metrics['grad_norm'], rtol=1e-4)
  assert accumulated_metrics['accuracy'] == whole_metrics['accuracy']
  moved = 0.0
  for a, b, before in zip(jax.tree_util.tree_leaves(accumulated.params),
                          jax.tree_util.tree_leaves(whole.params),
                          jax.tree_util.tree_leaves(variables['params'])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = max(moved, float(np.max(np.abs(b - before))))
  # The check has teeth: the step moved the weights well beyond the tolerance.
  assert moved > 1e-3


def test_frozen_parameters_and_statistics_do_not_move(
    one_batch_and_four_microbatches):
  variables, (whole, _), (accumulated, _) = one_batch_and_four_microbatches
  for state in (whole, accumulated):
    flat = {jax.tree_util.keystr(path): leaf for path, leaf in
            jax.tree_util.tree_leaves_with_path(state.params)}
    before = {jax.tree_util.keystr(path): leaf for path, leaf in
              jax.tree_util.tree_leaves_with_path(variables['params'])}
    frozen = [name for name in flat if '_bn' in name]
    assert frozen and any('spatiotemporal' in name for name in frozen)
    for name in frozen:
      np.testing.assert_array_equal(flat[name], before[name], err_msg=name)
    for a, b in zip(jax.tree_util.tree_leaves(state.batch_stats),
                    jax.tree_util.tree_leaves(variables['batch_stats'])):
      np.testing.assert_array_equal(a, b)


_TRAIN_WITHOUT_TENSORFLOW = '''
import json, pathlib, sys
from configs import synthetic
from pasnet_jax import train
from pasnet_jax.data import datasets, records

prepared = records.prepared_dataset(pathlib.Path(sys.argv[1]))
dataset = datasets.DatasetInfo(prepared, prepared.class_names,
                               prepared.split_sizes['train'])
config = synthetic.get_config()
config.strategy, config.model.fusion = 'conventional', 'A'
config.frames, config.image_size, config.eval_short_side = 2, 32, 36
config.batch_size, config.eval_batch_size = 4, 4
config.num_train_steps, config.log_every_steps = 2, 1
config.eval_clips = 2
config.optimizer.decay_at, config.optimizer.warmup_steps = (), 0
train.train_and_evaluate(config, sys.argv[2], dataset)
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')))
'''


def test_training_and_evaluation_never_import_tensorflow_nor_transfer_implicitly(
    tiny_dataset, tmp_path):
  """TensorFlow builds datasets; a training process reads them without it,
  and writes its TensorBoard events without it. Every transfer to the
  devices, the multi-view evaluation's included, is explicit: the run
  passes under JAX_TRANSFER_GUARD=disallow (on a CPU only transfers to the
  device are guarded)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, '-c', _TRAIN_WITHOUT_TENSORFLOW,
       str(tiny_dataset.prepared.directory), str(tmp_path / 'run')],
      cwd=root, env=dict(os.environ, PYTHONPATH=root,
                         JAX_TRANSFER_GUARD='disallow'), capture_output=True,
      text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.splitlines()[-1]) == []
  events = event_accumulator.EventAccumulator(str(tmp_path / 'run' / 'tensorboard'))
  events.Reload()
  assert [e.step for e in events.Scalars('train/loss')] == [1, 2]
  assert 'eval/top1' in events.Tags()['scalars']


# ---------------------------------------------------------------- the recipe


def test_optimizer_groups_follow_the_authors_policies():
  """Weights decay at lr x1, biases train at lr x2 without decay, BatchNorm
  scale/offset at lr x1 without decay, frozen layers not at all; the summed
  gradient is clipped as a whole."""
  config = run_helpers.small_config()
  config.optimizer.update(name='sgd', momentum=0.0, nesterov=False,
                          weight_decay=0.5, bias_lr_multiplier=2.0,
                          clip_norm=1e9, schedule='step')
  model = create_model(config.model, 3)
  params = {'appearance': {'conv1_7x7_s2': {'kernel': np.ones(2), 'bias': np.ones(2)},
                           'conv1_7x7_s2_bn': {'scale': np.ones(2), 'bias': np.ones(2)}},
            'pose': {'conv1_1': {'kernel': np.ones(2), 'bias': np.ones(2)}},
            'classifier': {'kernel': np.ones(2), 'bias': np.ones(2)}}
  params = jax.tree_util.tree_map(lambda x: x.astype(np.float32), params)
  grads = jax.tree_util.tree_map(np.ones_like, params)
  optimizer = train.create_optimizer(config, params, model,
                                     train.learning_rate_schedule(config, 0.1, 10))
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  appearance = updates['appearance']
  # Weight: -lr * (grad + decay * weight) = -0.1 * 1.5.
  np.testing.assert_allclose(appearance['conv1_7x7_s2']['kernel'], -0.15)
  np.testing.assert_allclose(updates['classifier']['kernel'], -0.15)
  np.testing.assert_allclose(appearance['conv1_7x7_s2']['bias'], -0.2)
  np.testing.assert_allclose(updates['classifier']['bias'], -0.2)
  np.testing.assert_allclose(appearance['conv1_7x7_s2_bn']['scale'], -0.1)
  np.testing.assert_allclose(appearance['conv1_7x7_s2_bn']['bias'], -0.1)
  np.testing.assert_array_equal(updates['pose']['conv1_1']['kernel'], 0)
  # Clipping: the norm of every trainable gradient together.
  config.optimizer.clip_norm = 1.0
  optimizer = train.create_optimizer(config, params, model,
                                     train.learning_rate_schedule(config, 0.1, 10))
  clipped, _ = optimizer.update(grads, optimizer.init(params), params)
  # 16 gradient entries of 1, the frozen pose's too (in training a frozen
  # part's gradient is zero).
  scale = 1.0 / np.sqrt(16)
  np.testing.assert_allclose(clipped['appearance']['conv1_7x7_s2_bn']['scale'],
                             -0.1 * scale, rtol=1e-5)


def test_warmup_does_not_delay_the_step_decays():
  config = run_helpers.small_config()
  config.optimizer.update(schedule='step', warmup_steps=10, decay_at=(0.5,),
                          decay_factor=0.1)
  schedule = train.learning_rate_schedule(config, 1.0, 100)
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(49)) == pytest.approx(1.0)
  assert float(schedule(50)) == pytest.approx(0.1)


def test_plateau_decays_after_patience_evaluations_without_improvement():
  plateau = train.Plateau()
  decays = [plateau.update(top1, patience=2)
            for top1 in (0.3, 0.5, 0.5, 0.4, 0.6, 0.6, 0.6, 0.6)]
  # 0.5 equalled is no improvement (the authors compare with >).
  assert decays == [False, False, False, True, False, False, True, False]
  assert plateau.decays == 2 and plateau.best == 0.6


def test_the_learning_rate_state_resumes_after_a_kill(tmp_path, tiny_dataset):
  """With an evaluation every step and patience 1 the rate decays during
  the run; stopped after 2 steps and resumed, the run ends as an
  uninterrupted one, learning-rate state included."""
  plateau = dict(eval_every_steps=1, **{'optimizer.schedule': 'plateau',
                                        'optimizer.plateau_patience': 1})
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  train.train_and_evaluate(run_helpers.small_config(**plateau), straight,
                           tiny_dataset)
  train.train_and_evaluate(
      run_helpers.small_config(num_train_steps=2, **plateau), resumed,
      tiny_dataset)
  train.train_and_evaluate(run_helpers.small_config(**plateau), resumed,
                           tiny_dataset)

  def final(workdir):
    manager = checkpoints.create_manager(workdir, 3)
    step = manager.latest_step()
    data = manager.restore(step, args=checkpoints.ocp.args.Composite(
        data=checkpoints.ocp.args.JsonRestore())).data
    manager.close()
    return step, data['plateau']
  assert final(resumed) == final(straight)
  assert final(straight)[1]['decays'] >= 1
  for a, b in zip(params_of(resumed), params_of(straight)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_signal_during_a_steps_logging_still_saves_the_step_it_names(
    tmp_path, tiny_dataset, monkeypatch):
  """SIGTERM lands after the loop decided not to save step 1 (while it logs
  the step): the stop must come with a saved step, at the next one."""
  log = train._Progress.train  # pylint: disable=protected-access

  def log_then_signal(self, step, *args):
    log(self, step, *args)
    if step == 1:
      os.kill(os.getpid(), signal.SIGTERM)
  monkeypatch.setattr(train._Progress, 'train', log_then_signal)  # pylint: disable=protected-access
  workdir = str(tmp_path / 'run')
  with pytest.raises(errors.Preempted, match=r'saved step (\d+)') as raised:
    train.train_and_evaluate(
        run_helpers.small_config(checkpoint_every_steps=100), workdir,
        tiny_dataset)
  saved = int(raised.value.args[0].split('saved step ')[1].split()[0])
  assert saved == 2
  assert checkpoints.complete_steps(
      os.path.join(workdir, checkpoints.CHECKPOINT_DIR)) == [saved]
