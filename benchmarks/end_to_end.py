"""Training clips/s end to end: the input pipeline, the model, and both at once.

    .venv/bin/python benchmarks/end_to_end.py
    .venv/bin/python benchmarks/end_to_end.py --rows='A:8:8,A+pool(I)+pool(F):4:2'
    python benchmarks/end_to_end.py --data_dir=~/tensorflow_datasets   # a built ucf101_frames

Tells a user whether input or compute limits their training. Each row
(fusion : K : batch, at --size) is measured three ways in one process, with
the UCF-101 config's training step (SGD, ECO's partial BatchNorm, pose frozen):
  * input: clips/s of `pipeline.make_train_dataset` alone, read as the
    training loop reads it (numpy batches from the worker processes);
  * model: clips/s of the jitted training step on one batch already on the
    devices, waiting for each step's loss as the training loop does;
  * end to end: the training loop's own sequence, next batch, global batch,
    step, loss, so input and compute share the machine as they do in a run.
Each figure is the batch over the median time per batch or step: the
pipeline read back to back (--input_batches), then --steps model steps,
then --steps end-to-end steps. The slower of input and model is the
bound; end to end over that bound says how well the two overlap (1.0:
the slower one alone sets the pace).

Without --data_dir it builds `ucf101_frames/split1` from generated
UCF-101-like videos (320 x 240 MPEG-4, benchmarks/input.py), so JPEG
decoding costs what it costs on the real archive's frames. Compilation
(with the first step) is outside every timing and reported. Prints a table and writes --out (JSON).
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from benchmarks import input as input_benchmark  # pylint: disable=g-import-not-at-top
from configs import ucf101  # pylint: disable=g-import-not-at-top
from pasnet_jax import parallel  # pylint: disable=g-import-not-at-top
from pasnet_jax import provenance  # pylint: disable=g-import-not-at-top
from pasnet_jax import train  # pylint: disable=g-import-not-at-top
from pasnet_jax.data import datasets  # pylint: disable=g-import-not-at-top
from pasnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from pasnet_jax.models.pasnet import create_model, init_variables  # pylint: disable=g-import-not-at-top


def parse_rows(text: str) -> list[tuple[str, int, int]]:
  """'A:8:8,A+pool(I)+pool(F):4:2' -> [(fusion, frames, batch), ...]."""
  rows = []
  for item in text.split(','):
    fusion, frames, batch = item.rsplit(':', 2)
    rows.append((fusion, int(frames), int(batch)))
  return rows


def row_config(fusion: str, frames: int, batch: int, size: int,
               data_dir: str):
  config = ucf101.get_config(f'fusion={fusion},frames={frames}')
  config.image_size = size
  config.batch_size = batch
  config.accumulation_steps = 1
  config.dataset.data_dir = data_dir
  config.dataset.build = False
  return config


class Row:
  """The training step and the input pipeline of one configuration."""

  def __init__(self, config, dataset: datasets.DatasetInfo, mesh):
    self.config, self.mesh = config, mesh
    model = create_model(config.model, dataset.num_classes)
    shape = (1, config.frames, config.image_size, config.image_size, 3)
    variables = init_variables(model, config.seed, shape)
    schedule = train.learning_rate_schedule(
        config, config.optimizer.learning_rate, num_steps=1)
    self.state, self.step_fn = train.create_training(config, model, variables,
                                                     schedule, mesh)
    self.dataset = dataset

  def batches(self):
    return iter(pipeline.make_train_dataset(
        self.dataset.prepared, num_frames=self.config.frames,
        image_size=self.config.image_size,
        batch_size=parallel.local_batch_size(self.config.batch_size),
        seed=self.config.seed, split='train'))

  def step(self, local) -> float:
    """Seconds of one training step on `local`, from host batch to loss."""
    start = time.perf_counter()
    self.state, step_metrics = self.step_fn(
        self.state, parallel.global_batch(local, self.mesh))
    float(step_metrics['loss'])
    return time.perf_counter() - start


def _without_mask(local: dict) -> dict:
  return {name: value for name, value in local.items() if name != 'mask'}


def input_seconds(row: Row, batches: int) -> list[float]:
  """Seconds per batch of the pipeline read back to back.

  Read between training steps, the pipeline would have refilled its
  prefetch buffer each time and look free; back to back it shows its rate.
  """
  iterator = row.batches()
  next(iterator)  # start-up and the first prefetch are not the steady state
  seconds = []
  for _ in range(batches):
    start = time.perf_counter()
    next(iterator)
    seconds.append(time.perf_counter() - start)
  return seconds


def measure(row: Row, steps: int, input_batches: int) -> dict:
  """Median seconds per batch or step of each way, one after the other.

  Model steps are not interleaved with end-to-end ones: the pipeline would
  refill its prefetch buffer during the model step, and its work would be
  counted against the model instead of against end to end.
  """
  training_batches = row.batches()
  fixed = _without_mask(next(training_batches))
  device_batch = parallel.global_batch(fixed, row.mesh)
  compile_s = row.step(fixed)  # meanwhile the prefetch buffer fills and stops
  times = {'input': input_seconds(row, input_batches), 'model': [],
           'end_to_end': []}
  for _ in range(steps):
    start = time.perf_counter()
    row.state, step_metrics = row.step_fn(row.state, device_batch)
    float(step_metrics['loss'])
    times['model'].append(time.perf_counter() - start)
  for _ in range(steps):
    start = time.perf_counter()
    row.step(_without_mask(next(training_batches)))
    times['end_to_end'].append(time.perf_counter() - start)

  batch = row.config.batch_size
  result = {'fusion': row.config.model.fusion, 'frames': row.config.frames,
            'batch': batch, 'size': row.config.image_size,
            'compile_s': compile_s}
  for name, seconds in times.items():
    result[f'{name}_clips_per_s'] = batch / float(np.median(seconds))
  input_speed, model_speed = (result['input_clips_per_s'],
                              result['model_clips_per_s'])
  result['bound'] = 'input' if input_speed < model_speed else 'compute'
  result['overlap'] = (result['end_to_end_clips_per_s'] /
                       min(input_speed, model_speed))
  return result


def format_table(results: list[dict]) -> str:
  lines = [f'{"fusion":<20} {"K":>3} {"B":>3} {"input":>8} {"model":>8} '
           f'{"e2e":>8} {"bound":>8} {"e2e/bound":>9} {"compile":>8}',
           f'{"":<20} {"":>3} {"":>3} {"clips/s":>8} {"clips/s":>8} '
           f'{"clips/s":>8} {"":>8} {"":>9} {"s":>8}']
  for r in results:
    lines.append(
        f'{r["fusion"]:<20} {r["frames"]:>3} {r["batch"]:>3} '
        f'{r["input_clips_per_s"]:>8.2f} {r["model_clips_per_s"]:>8.2f} '
        f'{r["end_to_end_clips_per_s"]:>8.2f} {r["bound"]:>8} '
        f'{r["overlap"]:>9.2f} {r["compile_s"]:>8.1f}')
  return '\n'.join(lines)


def build_generated(root: pathlib.Path, videos: int, frames: int
                    ) -> pathlib.Path:
  """Builds ucf101_frames/split1 from generated videos; returns its data_dir."""
  input_benchmark.write_manual_dir(root / 'manual', videos, frames, seed=0)
  builder = tfds.builder('ucf101_frames/split1', data_dir=str(root / 'data'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(root / 'manual')))
  return root / 'data'


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n', maxsplit=1)[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', default='A:8:8,A+pool(I)+pool(F):4:2',
                      help='comma-separated fusion:K:batch')
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--steps', type=int, default=5,
                      help='timed steps (or batches) per measurement')
  parser.add_argument('--input_batches', type=int, default=20,
                      help='batches read back to back for the input figure')
  parser.add_argument('--data_dir', default=None,
                      help='a TFDS data_dir holding a built ucf101_frames/split1; '
                      'without it one is generated')
  parser.add_argument('--videos', type=int, default=40,
                      help='generated videos (without --data_dir)')
  parser.add_argument('--video_frames', type=int, default=175)
  parser.add_argument('--out', default='benchmarks/end_to_end_results.json')
  args = parser.parse_args(argv)

  mesh = parallel.make_mesh()
  results = {**provenance.git_state(REPO),
             'date': datetime.date.today().isoformat(),
             'machine': f'{platform.processor() or platform.machine()}, '
                        f'{len(os.sched_getaffinity(0))} cores',
             'devices': [str(d) for d in jax.devices()],
             'jax': jax.__version__, 'rows': []}
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or str(build_generated(
        pathlib.Path(tmp), args.videos, args.video_frames))
    for fusion, frames, batch in parse_rows(args.rows):
      config = row_config(fusion, frames, batch, args.size, data_dir)
      dataset = datasets.load_dataset(config.dataset)
      results['rows'].append(measure(Row(config, dataset, mesh), args.steps,
                                      args.input_batches))
      pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + '\n')
  print(f'{results["machine"]}, {len(results["devices"])} device(s) '
        f'{jax.devices()[0].platform}, {args.size} x {args.size}, '
        f'{args.steps} steps each')
  print(format_table(results['rows']))


if __name__ == '__main__':
  main()
