"""A finished training run written without training, for `predict` tests."""

import io
import json
import pathlib

import av
import numpy as np
import orbax.checkpoint as ocp

from configs import synthetic as synthetic_config
from pasnet_jax.models import create_model
from tests import conftest
from tests import data_helpers

CLASS_NAMES = ('walk', 'wave', 'jump')
# The smallest clip PASNet takes, so that `predict` compiles in seconds.
FRAMES, IMAGE_SIZE, SHORT_SIDE = 2, 32, 36


def write_trained_run(workdir: pathlib.Path) -> pathlib.Path:
  """A workdir that inference.load_trained reads as a finished run.

  Random variables of PASNet (fusion A), saved as a converted checkpoint is,
  beside the config.json and results.json that training writes.
  """
  config = synthetic_config.get_config()
  config.model.fusion = 'A'
  config.frames, config.image_size = FRAMES, IMAGE_SIZE
  config.eval_short_side = SHORT_SIDE
  model = create_model(config.model, len(CLASS_NAMES))
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
