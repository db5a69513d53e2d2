"""Top-k, mean class accuracy, confusion matrix and its files."""

import csv

import numpy as np

from pasnet_jax import metrics


def test_summary_of_a_known_case():
  names = ['a', 'b', 'c']
  labels = np.array([0, 0, 1, 2, 2, 2])
  scores = np.array([[.9, .05, .05], [.2, .7, .1], [.1, .8, .1],
                     [.3, .3, .4], [.5, .1, .4], [.1, .2, .7]])
  summary = metrics.summarize(scores, labels, names)
  assert summary['top1'] == 4 / 6
  assert summary['top5'] == 1.0
  # Per class: a 1/2, b 1/1, c 2/3; the mean weighs classes equally.
  assert np.isclose(summary['mean_class_accuracy'], (0.5 + 1 + 2 / 3) / 3)
  assert summary['per_class_accuracy'] == {'a': 0.5, 'b': 1.0, 'c': 2 / 3}
  np.testing.assert_array_equal(summary['confusion_matrix'],
                                [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
  assert summary['num_videos'] == 6


def test_top_k_and_absent_classes():
  scores = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
  labels = np.array([1, 1])
  np.testing.assert_array_equal(metrics.top_k_correct(scores, labels, 1), [False, False])
  np.testing.assert_array_equal(metrics.top_k_correct(scores, labels, 2), [False, True])
  np.testing.assert_array_equal(metrics.top_k_correct(scores, labels, 3), [True, True])
  summary = metrics.summarize(scores, labels, ['w', 'x', 'y', 'z'])
  # Classes with no test video do not count in the mean.
  assert summary['per_class_accuracy']['w'] is None
  assert summary['mean_class_accuracy'] == 0.0


def test_confusion_matrix_files_name_the_classes(tmp_path):
  matrix = np.array([[3, 1], [0, 4]])
  csv_path, png_path = metrics.write_confusion_matrix(matrix, ['jump', 'wave'],
                                                      str(tmp_path))
  with open(csv_path) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['true \\ predicted', 'jump', 'wave']
  assert rows[1] == ['jump', '3', '1']
  with open(png_path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['confusion_matrix.csv',
                                                        'confusion_matrix.png']
