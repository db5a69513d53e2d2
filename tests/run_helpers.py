"""Runs for the tests: the tiny dataset and config they train, and a
finished run written without training, for `predict` tests."""

import io
import json
import pathlib

import av
import numpy as np
import orbax.checkpoint as ocp

from configs import synthetic as synthetic_config
from pasnet_jax.data import datasets
from pasnet_jax.data import records
from pasnet_jax.data import synthetic
from pasnet_jax.models import create_model
from tests import conftest
from tests import data_helpers

CLASS_NAMES = ('walk', 'wave', 'jump')
# The tiny dataset: ten actions, one test subject doing each.
NUM_TINY_CLASSES = TINY_TEST_VIDEOS = 10
# The smallest clip PASNet takes, so that `predict` compiles in seconds.
FRAMES, IMAGE_SIZE, SHORT_SIDE = 2, 32, 36


def tiny_dataset(data_dir: str) -> datasets.DatasetInfo:
  """A `synthetic_actions` of 2 training and 1 test subject (10 test videos),
  built in `data_dir` unless it is there."""
  config = synthetic.SyntheticActionsConfig(
      name='tiny', train_subjects=2, test_subjects=1, image_size=64,
      min_frames=8, max_frames=12)
  builder = synthetic.SyntheticActions(config=config, data_dir=data_dir)
  builder.download_and_prepare()
  prepared = records.prepared_dataset(builder)
  return datasets.DatasetInfo(
      prepared=prepared, class_names=prepared.class_names,
      num_train_examples=prepared.split_sizes['train'])


def small_config(**changes):
  """Fusion "A" at 2 x 32 x 32, 4 steps of 4 clips, conventional, read in
  the training process; `changes` maps dotted keys to values."""
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
  # Reader processes take seconds to start, at every training run and
  # evaluation; the pipeline's and the fault tests keep them.
  config.data_workers = 0
  return changed(config, **changes)


def changed(config, **changes):
  """`config` with dotted keys set, e.g. changed(config, **{'model.fusion': 'A'})."""
  for key, value in changes.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def write_trained_run(workdir: pathlib.Path,
                      eco_layout: str = 'official') -> pathlib.Path:
  """A workdir that inference.load_trained reads as a finished run.

  Random variables of PASNet (fusion A), saved as a converted checkpoint is,
  beside the config.json and results.json that training writes; an early
  layout run's config.json has no eco_layout key, as before the key existed.
  """
  config = synthetic_config.get_config()
  config.model.fusion = 'A'
  config.frames, config.image_size = FRAMES, IMAGE_SIZE
  config.eval_short_side = SHORT_SIDE
  config.model.eco_layout = eco_layout
  model = create_model(config.model, len(CLASS_NAMES))
  if eco_layout == 'early':
    del config.model['eco_layout']
  variables = conftest.random_variables(
      model, (1, FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3))
  variables = {'params': variables['params'],
               'batch_stats': variables['batch_stats']}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(workdir.absolute(), variables)
  (workdir / 'config.json').write_text(json.dumps(config.to_dict()))
  (workdir / 'results.json').write_text(json.dumps(
      {'class_names': list(CLASS_NAMES), 'step': 1}))
  return workdir


def gray_video_bytes(num_frames: int, width: int, height: int) -> bytes:
  """A lossless grayscale Matroska (FFV1) video; frame i is flat grey 10 i."""
  buffer = io.BytesIO()
  with av.open(buffer, 'w', format='matroska') as container:
    stream = container.add_stream('ffv1', rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, 'gray'
    for i in range(num_frames):
      image = np.full((height, width), 10 * i + 20, np.uint8)
      data_helpers.encode_frame(container, stream, image, 'gray')
    data_helpers.encode_frame(container, stream, None, 'gray')
  return buffer.getvalue()
