"""The generated synthetic_actions dataset."""

import io

import numpy as np
import pytest
from PIL import Image

from pasnet_jax.data import pipeline
from pasnet_jax.data import records
from pasnet_jax.data import synthetic
from tests import data_helpers

CONFIG = synthetic.SyntheticActionsConfig(name='default')


def test_videos_are_deterministic_from_the_seed():
  first = synthetic.render_video(CONFIG, subject=3, action=4)
  again = synthetic.render_video(CONFIG, subject=3, action=4)
  assert first['video'] == again['video']
  np.testing.assert_array_equal(first['keypoints'], again['keypoints'])
  other = synthetic.render_video(
      synthetic.SyntheticActionsConfig(name='other', seed=1), 3, 4)
  assert other['video'] != first['video']


@pytest.mark.parametrize('action', range(len(synthetic.ACTIONS)))
def test_every_action_draws_a_figure_with_keypoints(action):
  example = synthetic.render_video(CONFIG, subject=action, action=action)
  n = example['num_frames']
  assert CONFIG.min_frames <= n <= CONFIG.max_frames == 40
  assert example['label'] == action and example['fps'] == CONFIG.fps
  assert example['name'] == f'{synthetic.ACTIONS[action]}/subject{action:03d}'
  keypoints = example['keypoints']
  assert keypoints.shape == (n, 18, 2) and keypoints.dtype == np.float32
  # The figure is mostly in the picture, and it moves.
  inside = (keypoints >= 0) & (keypoints < CONFIG.image_size)
  assert inside.all(axis=-1).mean() > 0.9
  assert np.ptp(keypoints, axis=0).max() > 5
  frame = np.asarray(Image.open(io.BytesIO(example['video'][0])))
  assert frame.shape == (96, 96, 3)


def test_sit_down_and_stand_up_differ_in_direction_only():
  # The same poses in opposite order: only the motion tells them apart.
  config = CONFIG
  down = synthetic.render_video(config, 0, synthetic.ACTIONS.index('sit_down'))
  up = synthetic.render_video(config, 0, synthetic.ACTIONS.index('stand_up'))
  def hip_height(example):
    return example['keypoints'][:, synthetic.KEYPOINTS.index('right_hip'), 1]
  assert hip_height(down)[-1] > hip_height(down)[0] + 10
  assert hip_height(up)[-1] < hip_height(up)[0] - 10


@pytest.fixture(scope='module')
def builder(module_tmp):
  return data_helpers.prepare('synthetic_actions',
                              module_tmp('manual'),
                              module_tmp('synthetic'))


def test_build_splits_by_subject(builder):
  assert data_helpers.split_sizes(builder)['train'] == 300
  assert data_helpers.split_sizes(builder)['test'] == 100
  assert builder.info.features['label'].names == list(synthetic.ACTIONS)
  names = records.prepared_dataset(builder).videos['test'].names
  subjects = {int(name[-3:]) for name in names}
  assert subjects == set(range(30, 40))


def test_pipeline_reads_it_at_64(builder):
  batch = next(iter(pipeline.make_train_dataset(
      builder, num_frames=4, image_size=64, batch_size=4, seed=0,
      num_workers=1)))
  assert batch['video'].shape == (4, 4, 64, 64, 3)
  assert set(batch['label']) <= set(range(10))
