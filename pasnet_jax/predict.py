"""Top-5 classes for video files, from a trained run.

  python -m pasnet_jax.predict --workdir=DIR video.mp4 [more.avi ...]

Each video is ranked as the evaluation sees it (the centre frame of each of
K segments, short side resized, centre crop). Short videos, odd sizes,
grayscale and huge frames are used (pasnet_jax/data/video.py says how); a
file that cannot be decoded gets one `error:` line naming it, the others are
still ranked, and the exit status is then 2.
"""

import sys

from absl import app
from absl import flags
import jax
import numpy as np

from pasnet_jax import cli
from pasnet_jax import errors
from pasnet_jax import inference
from pasnet_jax.errors import DatasetError


def predict_files(trained: inference.TrainedModel, paths, top: int):
  """Yields (path, [(class name, probability)] or None, error message or None)."""
  config = trained.config
  # The weights cross over once; each clip is one explicit transfer.
  device = jax.devices()[0]
  variables = trained.on_devices(device)
  apply = jax.jit(lambda variables, video: jax.nn.softmax(
      trained.model.apply(variables, video, train=False), axis=-1))
  for path in paths:
    try:
      clip = inference.clip_from_file(path, num_frames=config.frames,
                                     image_size=config.image_size,
                                     short_side=config.eval_short_side)
    except DatasetError as error:
      yield path, None, str(error)
      continue
    probabilities = jax.device_get(
        apply(variables, jax.device_put(clip[None], device)))[0]
    order = np.argsort(-probabilities)[:top]
    yield path, [(trained.class_names[i], float(probabilities[i]))
                 for i in order], None


def define_flags():
  """Flags of this program, defined only when it runs as one."""
  flags.DEFINE_string('workdir', None, 'Training run.', required=True)
  flags.DEFINE_integer('top', 5, 'How many classes to print.')


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('Give at least one video file.')
  failures = 0
  cli.quiet_libraries()
  with cli.clean_errors():
    trained = inference.load_trained(flags.FLAGS.workdir)
    for path, ranking, error in predict_files(trained, paths, flags.FLAGS.top):
      if error:
        failures += 1
        sys.stderr.write(f'error: {error}\n')
        continue
      print(path)
      for rank, (name, probability) in enumerate(ranking, 1):
        print(f'  {rank}. {name:<30} {probability:.3f}')
  return errors.BAD_INPUT if failures else 0


if __name__ == '__main__':
  define_flags()
  sys.exit(app.run(main))
