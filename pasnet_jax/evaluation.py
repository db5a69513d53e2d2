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
      process_index=jax.process_index(), process_count=jax.process_count())


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
