"""Training end to end on a tiny generated dataset: resume, NaN stop,
twice-finetune, results, and the evaluate / predict / visualize programs."""

import json
import logging
import os

import jax
import numpy as np
import pytest

from configs import synthetic as synthetic_config
from pasnet_jax import checkpoints
from pasnet_jax import config_checks
from pasnet_jax import errors
from pasnet_jax import evaluate
from pasnet_jax import inference
from pasnet_jax import predict
from pasnet_jax import train
from pasnet_jax import visualize
from pasnet_jax.data import datasets
from pasnet_jax.data import synthetic
from tests import data_helpers

TEST_VIDEOS = 10  # One test subject doing each of the ten actions.


@pytest.fixture(scope='module')
def tiny_dataset(tmp_path_factory):
  config = synthetic.SyntheticActionsConfig(
      name='tiny', train_subjects=2, test_subjects=1, image_size=64,
      min_frames=8, max_frames=12)
  builder = synthetic.SyntheticActions(
      config=config, data_dir=str(tmp_path_factory.mktemp('tfds')))
  builder.download_and_prepare()
  return datasets.DatasetInfo(
      builder=builder, class_names=list(builder.info.features['label'].names),
      num_train_examples=builder.info.splits['train'].num_examples)


def small_config(**changes):
  config = synthetic_config.get_config()
  config.strategy = 'conventional'
  config.model.fusion = 'A'
  config.frames = 2
  config.image_size = 32
  config.eval_short_side = 36
  config.batch_size = 4
  config.eval_batch_size = 4  # 10 test videos: the last batch is padded.
  config.num_train_steps = 4
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 100
  config.log_every_steps = 1
  config.optimizer.decay_at = ()
  config.optimizer.warmup_steps = 0
  config.stage1.num_train_steps = 2
  for key, value in changes.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def params_of(workdir, which='latest'):
  return jax.tree_util.tree_leaves(checkpoints.load_variables(workdir, which))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, tiny_dataset):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  results = train.train_and_evaluate(small_config(profile_steps=1), workdir,
                                     tiny_dataset)
  return workdir, results


def test_resumed_run_ends_where_an_uninterrupted_one_does(uninterrupted, tmp_path,
                                                          caplog, tiny_dataset):
  workdir = str(tmp_path)
  train.train_and_evaluate(small_config(num_train_steps=2), workdir, tiny_dataset)
  early = params_of(workdir)
  caplog.set_level(logging.INFO)
  train.train_and_evaluate(small_config(), workdir, tiny_dataset)
  assert 'Resuming' in caplog.text and 'from step 2' in caplog.text
  resumed, straight = params_of(workdir), params_of(uninterrupted[0])
  for a, b in zip(resumed, straight):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The check has teeth: training moved the weights away from the 2-step run.
  assert any(not np.allclose(a, b) for a, b in zip(early, straight))


def test_results_count_every_test_video_once(uninterrupted):
  workdir, results = uninterrupted
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['num_videos'] == TEST_VIDEOS == results['num_videos']
  assert saved['num_classes'] == 10
  assert saved['step'] == 4 and saved['fusion'] == 'A' and saved['frames'] == 2
  assert set(saved) >= {'top1', 'top5', 'mean_class_accuracy', 'per_class_accuracy',
                        'class_names'}
  assert 0.0 <= saved['top1'] <= saved['top5'] <= 1.0
  for name in ('confusion_matrix.png', 'confusion_matrix.csv', 'config.json'):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  traces = [name for _, _, names in os.walk(os.path.join(workdir, 'profile'))
            for name in names if name.endswith(('.xplane.pb', '.trace.json.gz'))]
  assert traces


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_dataset):
  config = small_config(num_train_steps=6, checkpoint_every_steps=1)
  config.optimizer.learning_rate = 1e12
  config.optimizer.clip_norm = 1e30
  with pytest.raises(errors.Diverged, match=r'at step (\d+)') as failure:
    train.train_and_evaluate(config, str(tmp_path), tiny_dataset)
  step = int(failure.value.args[0].split('at step ')[1].split(';')[0])
  kept = checkpoints.create_manager(str(tmp_path), 3).latest_step()
  assert kept == step - 1
  state = checkpoints.load_variables(str(tmp_path), 'latest')
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(state))


def test_config_errors_name_the_key():
  with pytest.raises(errors.ConfigError, match="model.fusion='A\\+B'.*conv\\(A,I,F\\)"):
    config_checks.check_config(small_config(**{'model.fusion': 'A+B'}))
  with pytest.raises(errors.ConfigError, match='image_size=100 must be a positive multiple of 32'):
    config_checks.check_config(small_config(image_size=100))
  with pytest.raises(errors.ConfigError, match=r'frames=0: need at least one frame'):
    config_checks.check_config(small_config(frames=0))


def test_batch_that_does_not_split_over_devices_says_what_to_set(monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 3)
  with pytest.raises(errors.ConfigError, match='set --config.batch_size to a multiple of 3'):
    config_checks.check_devices(small_config())


def test_a_workdir_of_another_config_is_refused(uninterrupted, tiny_dataset):
  with pytest.raises(errors.TrainingError, match="model.fusion='A'"):
    train.train_and_evaluate(small_config(**{'model.fusion': 'A+pool(I)'}),
                             uninterrupted[0], tiny_dataset)


@pytest.fixture(scope='module')
def twice(tmp_path_factory, tiny_dataset):
  workdir = str(tmp_path_factory.mktemp('twice'))
  config = small_config(strategy='twice', num_train_steps=1)
  config.model.fusion = 'A+pool(I)+pool(F)'
  train.train_and_evaluate(config, workdir, tiny_dataset)
  return workdir


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


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  directory = tmp_path_factory.mktemp('videos')
  good = directory / 'moving_square.avi'
  good.write_bytes(data_helpers.video_bytes(12, width=48, height=40))
  broken = directory / 'broken.avi'
  broken.write_bytes(data_helpers.truncated(data_helpers.video_bytes(12)))
  empty = directory / 'empty.mp4'
  empty.write_bytes(b'')
  return good, broken, empty


def test_predict_ranks_classes_and_names_bad_files(twice, videos):
  trained = inference.load_trained(twice)
  results = list(predict.predict_files(trained, [str(v) for v in videos], top=5))
  path, ranking, error = results[0]
  assert error is None and len(ranking) == 5
  assert all(name in trained.class_names for name, _ in ranking)
  probabilities = [p for _, p in ranking]
  assert probabilities == sorted(probabilities, reverse=True)
  assert 0 < sum(probabilities) <= 1.0 + 1e-5
  for (path, ranking, error), video in zip(results[1:], videos[1:]):
    assert ranking is None and str(video) in error


def test_ensemble_of_runs_counts_each_video_once(twice, uninterrupted,
                                                 tiny_dataset):
  summary = evaluate.evaluate_runs([twice, uninterrupted[0]],
                                   dataset=tiny_dataset)
  assert summary['num_videos'] == TEST_VIDEOS
  assert len(summary['runs']) == 2
  assert summary['runs'][0]['fusion'] == 'A+pool(I)+pool(F)'


def test_visualize_draws_every_row(twice, videos, tmp_path):
  trained = inference.load_trained(twice)
  clip = inference.clip_from_file(str(videos[0]), num_frames=2, image_size=32,
                                  short_side=36)
  features = jax.device_get(trained.model.apply(
      trained.variables, clip[None], train=False,
      method=trained.model.__class__.features))
  rows = visualize.feature_rows(features)
  assert [name for name, _ in rows][0] == 'explicit pose x_E'
  assert all(maps.shape == (2, 4, 4) for _, maps in rows)
  out = tmp_path / 'figure.png'
  visualize.draw(clip, rows, 'test', str(out))
  assert out.read_bytes()[:4] == b'\x89PNG'


def test_unwritable_workdir_is_a_clear_error(tmp_path, tiny_dataset):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(errors.TrainingError, match=r'Cannot write to workdir .*a_file/run'):
    train.train_and_evaluate(small_config(), str(blocker / 'run'), tiny_dataset)
