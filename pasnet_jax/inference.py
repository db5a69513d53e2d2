"""Loading a trained run for evaluation, prediction and pictures."""

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from pasnet_jax import checkpoints
from pasnet_jax import errors
from pasnet_jax import workdir as workdir_lib
from pasnet_jax.data import pipeline
from pasnet_jax.data import sampling
from pasnet_jax.data import video
from pasnet_jax.models import spatiotemporal
from pasnet_jax.models.pasnet import create_model, pose_transforms, PASNet


@dataclasses.dataclass
class TrainedModel:
  model: PASNet
  variables: dict
  config: ml_collections.ConfigDict
  class_names: list[str]
  workdir: str
  step: int

  def on_devices(self, sharding: jax.sharding.Sharding | jax.Device) -> dict:
    """The variables put on `sharding`'s devices, once, with the pose kernel
    transforms prepared there where the model runs them (config.image_size)."""
    variables = jax.device_put(self.variables, sharding)
    size = self.config.image_size
    return {**variables, **pose_transforms(self.model, variables, size, size)}


def load_trained(workdir: str) -> TrainedModel:
  """The best checkpoint of a run (its final stage for twice-finetune)."""
  if not os.path.isdir(workdir):
    raise errors.CheckpointError(
        f'{workdir} is not a directory; give the --workdir of a training run.')
  stage_dir = workdir_lib.final_stage_dir(os.path.abspath(workdir))
  config_path = os.path.join(stage_dir, 'config.json')
  results_path = os.path.join(stage_dir, 'results.json')
  for path in (config_path, results_path):
    if not os.path.exists(path):
      raise errors.CheckpointError(
          f'{path} is missing: {workdir} is not a finished training run '
          '(train it with python -m pasnet_jax.main first).')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(results_path) as f:
    results = json.load(f)
  class_names = results['class_names']
  variables = checkpoints.load_variables(stage_dir)
  variables = jax.tree_util.tree_map(np.asarray, variables)
  # The weights say which ECO layout they are, also for runs whose
  # config.json predates the key.
  config.model.eco_layout = spatiotemporal.layout_of(
      variables['params']['spatiotemporal'])
  if 'pose_conv' not in config.model:  # A run from before the key.
    config.model.pose_conv = 'auto'
  model = create_model(config.model, len(class_names))
  return TrainedModel(model=model, variables=variables, config=config,
                      class_names=class_names, workdir=stage_dir,
                      step=int(results['step']))


def clip_from_file(path: str, *, num_frames: int, image_size: int,
                   short_side: int) -> np.ndarray:
  """uint8 (K, S, S, 3): a video file sampled and cropped as for evaluation.

  The video is decoded twice, to count its frames and to keep the K it
  needs, so that memory does not grow with its length.

  Raises DatasetError naming the file if it cannot be decoded.
  """
  indices = sampling.centre_indices(video.count_frames(path), num_frames)
  frames, _ = video.decode_video(path, short_side=short_side, indices=indices)
  try:
    return pipeline.preprocess_for_prediction(
        frames, num_frames=num_frames, image_size=image_size,
        resize_size=short_side)
  except ValueError as error:
    raise errors.DatasetError(f'{path}: {error}') from error
