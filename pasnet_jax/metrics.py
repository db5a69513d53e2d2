"""Classification metrics over a whole test split, and their pictures."""

import csv
import os
from typing import Sequence

import numpy as np


def top_k_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """(N,) bool: the label is among the k highest scores."""
  k = min(k, scores.shape[-1])
  top = np.argsort(-scores, axis=-1, kind='stable')[:, :k]
  return np.any(top == labels[:, None], axis=-1)


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """(num_classes, num_classes) counts; rows are true classes."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (labels, predictions), 1)
  return matrix


def summarize(scores: np.ndarray, labels: np.ndarray,
              class_names: Sequence[str]) -> dict:
  """Top-1, top-5, mean class accuracy and per-class accuracy.

  `scores` (N, C) are logits or probabilities of every test video, each
  counted once; `labels` (N,).
  """
  num_classes = len(class_names)
  predictions = np.argmax(scores, axis=-1)
  matrix = confusion_matrix(predictions, labels, num_classes)
  per_class_total = matrix.sum(axis=1)
  present = per_class_total > 0
  per_class = np.where(present, np.diag(matrix) / np.maximum(per_class_total, 1),
                       np.nan)
  return {
      'top1': float(np.mean(predictions == labels)),
      'top5': float(np.mean(top_k_correct(scores, labels, 5))),
      'mean_class_accuracy': float(np.mean(per_class[present])),
      'per_class_accuracy': {name: (None if np.isnan(acc) else float(acc))
                             for name, acc in zip(class_names, per_class)},
      'num_videos': int(len(labels)),
      'num_classes': num_classes,
      'confusion_matrix': matrix,
  }


def write_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str],
                           directory: str, title: str = '') -> tuple[str, str]:
  """Writes confusion_matrix.csv and confusion_matrix.png; returns their paths."""
  csv_path = os.path.join(directory, 'confusion_matrix.csv')
  png_path = os.path.join(directory, 'confusion_matrix.png')
  with open(csv_path + '.tmp', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['true \\ predicted', *class_names])
    for name, row in zip(class_names, matrix):
      writer.writerow([name, *row.tolist()])
  os.replace(csv_path + '.tmp', csv_path)

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  num_classes = len(class_names)
  size = max(6.0, 0.18 * num_classes + 3)
  figure, axes = plt.subplots(figsize=(size, size))
  totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  image = axes.imshow(matrix / totals, cmap='Blues', vmin=0, vmax=1)
  axes.set_xticks(range(num_classes))
  axes.set_yticks(range(num_classes))
  font = 8 if num_classes <= 30 else 4
  axes.set_xticklabels(class_names, rotation=90, fontsize=font)
  axes.set_yticklabels(class_names, fontsize=font)
  axes.set_xlabel('predicted')
  axes.set_ylabel('true')
  if num_classes <= 30:
    for i in range(num_classes):
      for j in range(num_classes):
        if matrix[i, j]:
          axes.text(j, i, str(matrix[i, j]), ha='center', va='center',
                    fontsize=6, color='white' if matrix[i, j] / totals[i, 0] > 0.5
                    else 'black')
  axes.set_title(title or 'Confusion matrix (rows: true class, normalised)')
  figure.colorbar(image, ax=axes, fraction=0.046)
  figure.tight_layout()
  figure.savefig(png_path + '.tmp.png', dpi=120)
  plt.close(figure)
  os.replace(png_path + '.tmp.png', png_path)
  return csv_path, png_path
