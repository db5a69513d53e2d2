"""Evaluation counts every test video once, whatever the padding, and
averages the views of a multi-view batch."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from pasnet_jax import evaluation
from pasnet_jax import parallel
from tests import run_helpers


def test_results_count_every_test_video_once(uninterrupted):
  workdir, results = uninterrupted
  with open(os.path.join(workdir, 'results.json')) as f:
    saved = json.load(f)
  assert saved['num_videos'] == run_helpers.TINY_TEST_VIDEOS == results['num_videos']
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


def test_evaluate_keeps_real_rows_once_and_averages_views():
  # Scores of a view: its pixel mean in every class column, so that each
  # view's score is known. The second batch's last row is padding.
  def pixel_means(variables, video):
    del variables
    return jnp.mean(video, axis=(1, 2, 3, 4))[:, None] * jnp.ones((1, 3))
  eval_fn = jax.jit(evaluation.average_views(pixel_means))
  views = np.zeros((2, 2, 1, 32, 32, 3), np.float32)
  views[:, 0], views[:, 1] = 1.0, 3.0
  views[1, :] += 10.0
  batches = [
      {'video': views, 'label': np.array([0, 1], np.int32),
       'mask': np.array([True, True])},
      {'video': views + 100.0, 'label': np.array([2, 0], np.int32),
       'mask': np.array([True, False])},
  ]
  scores, labels = evaluation.evaluate({}, batches, model=None,
                                       mesh=parallel.make_mesh(),
                                       eval_fn=eval_fn)
  np.testing.assert_array_equal(labels, [0, 1, 2])
  np.testing.assert_allclose(scores[:, 0], [2.0, 12.0, 102.0])
  assert scores.shape == (3, 3)


def test_the_config_sets_the_reading_processes(tiny_dataset):
  config = run_helpers.small_config()
  assert evaluation.eval_batches(tiny_dataset, config).num_workers == 0
  config.data_workers = -1
  assert (evaluation.eval_batches(tiny_dataset, config).num_workers
          == len(os.sched_getaffinity(0)))
