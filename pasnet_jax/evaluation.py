"""Exact evaluation: the scores of every test video once, over every device.

The evaluation batches of each process are padded to the same count and
masked; `evaluate` keeps the scores of the real examples only, averaging
over the views (clips x crops) of a multi-view batch.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pasnet_jax import parallel
from pasnet_jax.data import pipeline
from pasnet_jax.data.datasets import DatasetInfo
from pasnet_jax.models.pasnet import PASNet


def eval_batches(dataset: DatasetInfo, config: ml_collections.ConfigDict,
                 clips: int | None = None, crops: int | None = None):
  """This process's evaluation batches (numpy), padded and masked."""
  return pipeline.make_eval_dataset(
      dataset.prepared, num_frames=config.frames, image_size=config.image_size,
      batch_size=parallel.local_batch_size(config.eval_batch_size),
      split=config.dataset.eval_split, resize_size=config.eval_short_side,
      num_clips=clips or config.eval_clips, num_crops=crops or config.eval_crops,
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_workers=config.data_workers)


def average_views(scores_fn):
  """`scores_fn(variables, video (N, K, H, W, 3)) -> (N, C)` extended to
  multi-view batches (B, V, K, H, W, 3): the mean of each video's V views.

  The views go through the network as one batch of B * V clips, so
  eval_batch_size counts videos and memory grows with the views.
  """
  def scores(variables, video):
    if video.ndim == 5:
      return scores_fn(variables, video)
    videos, views = video.shape[:2]
    per_view = scores_fn(variables, video.reshape((-1,) + video.shape[2:]))
    return jnp.mean(per_view.reshape(videos, views, -1), axis=1)
  return scores


def eval_step(variables: dict, video: jax.Array, *, model: PASNet) -> jax.Array:
  """Softmax scores (B, C) float32 of (B, K, H, W, 3) clips, or of
  (B, V, K, H, W, 3) views averaged."""
  return average_views(lambda variables, clips: jax.nn.softmax(
      model.apply(variables, clips, train=False), axis=-1))(variables, video)


def evaluate(variables: dict, eval_batches, *, model: PASNet,
             mesh: jax.sharding.Mesh, eval_fn=None) -> tuple[np.ndarray, np.ndarray]:
  """Scores and labels of every real (unmasked) example, each exactly once.

  `variables` are on the devices already; batches are put there ahead of
  use, and scores come back once, at the end.
  """
  eval_fn = eval_fn or jax.jit(functools.partial(eval_step, model=model))
  on_device = []
  with parallel.DevicePrefetch(eval_batches, mesh) as batches:
    for batch in batches:
      on_device.append((eval_fn(variables, batch['video']), batch['label'],
                        batch['mask']))
  fetched = parallel.to_host(on_device)
  scores = np.concatenate([np.asarray(s)[np.asarray(m)] for s, _, m in fetched])
  labels = np.concatenate([np.asarray(l)[np.asarray(m)] for _, l, m in fetched])
  return scores, labels
