"""The evaluate, predict and visualize programs on trained runs."""

import jax
import pytest

from pasnet_jax import evaluate
from pasnet_jax import inference
from pasnet_jax import predict
from pasnet_jax import visualize
from tests import data_helpers
from tests import run_helpers


@pytest.fixture(scope='module')
def videos(module_tmp):
  directory = module_tmp('videos')
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
  assert summary['num_videos'] == run_helpers.TINY_TEST_VIDEOS
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


@pytest.mark.parametrize('layout', ['official', 'early'])
def test_a_trained_run_is_loaded_in_the_layout_of_its_weights(tmp_path, layout):
  """evaluate, predict and visualize load runs through load_trained, which
  reads the ECO layout off the weights (an early run's config.json may
  predate the key)."""
  trained = inference.load_trained(
      str(run_helpers.write_trained_run(tmp_path / 'run', eco_layout=layout)))
  assert trained.model.eco_layout == layout
  assert trained.config.model.eco_layout == layout


def test_the_figure_says_when_the_pose_branch_is_untrained(twice):
  config = inference.load_trained(twice).config
  assert not config.init.openpose and config.model.freeze_pose
  assert visualize.pose_note(config).startswith('pose branch untrained')
  config.init.openpose = 'ckpt/openpose'
  assert visualize.pose_note(config) is None
  config.init.openpose, config.model.freeze_pose = '', False
  assert 'trained from random weights' in visualize.pose_note(config)
