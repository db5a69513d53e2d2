"""Training clips/s end to end: the input pipeline, the model, and both at once.

    .venv/bin/python benchmarks/end_to_end.py
    .venv/bin/python benchmarks/end_to_end.py --rows='A:4:16:32,A:4:2:224'
    python benchmarks/end_to_end.py --data_dir=DIR --rows='A:16:32' \\
        --size=224 --dtype=bfloat16          # DIR holds a built ucf101_frames

Tells a user whether input or compute limits their training. Each row
(fusion : K : batch [: size], size --size where not given) is measured three
ways in one process, with the UCF-101 config's training step in --dtype:
  * input: `pipeline.make_train_dataset` alone, read back to back as the
    training loop reads it (numpy batches from the worker processes);
  * model: the jitted training step on one batch already on the devices,
    steps dispatched back to back;
  * end to end: the training loop's own sequence (train.py): the pipeline's
    batches through `parallel.DevicePrefetch`, which puts
    them on the devices two ahead from a background thread, and steps
    dispatched back to back.
Each figure is N batches or steps (--input_batches, --steps) times the batch
over the time of all N. Like the training loop, which waits for the device
only at its log steps, the steps wait for it only at the end, on the last
step's outputs. Before the input and end-to-end stretches, as many batches
as the pipeline holds ahead are taken untimed: its buffers, filled while
nothing read them, would otherwise pass for speed.

The slower of input and model is the bound; end to end over that bound
says how well the two overlap (1.0: the slower one alone sets the pace).
That holds where the model runs on an accelerator. On a CPU device the
model and the input's worker processes share the cores, so their times add
up rather than overlap: there the 'shared' figure, 1 / (1/input + 1/model),
is what end to end can reach, and e2e/shared says how close it comes.

Without --data_dir it builds `ucf101_frames/split1` from generated
UCF-101-like videos (320 x 240 MPEG-4, benchmarks/input.py), so JPEG
decoding costs what it costs on the real archive's frames; that needs
TensorFlow, TFDS and PyAV, reading a built one (--data_dir) does not need
TensorFlow. Compilation (the first step) is outside every timing and
reported. Prints a table and writes --out (JSON), with the load average
before and after each row: on a shared machine the figures move with the
other work on it.
"""

import argparse
import datetime
import itertools
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

from configs import ucf101  # pylint: disable=g-import-not-at-top
from pasnet_jax import parallel  # pylint: disable=g-import-not-at-top
from pasnet_jax import provenance  # pylint: disable=g-import-not-at-top
from pasnet_jax import train  # pylint: disable=g-import-not-at-top
from pasnet_jax.data import datasets  # pylint: disable=g-import-not-at-top
from pasnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from pasnet_jax.models.pasnet import create_model, init_variables  # pylint: disable=g-import-not-at-top

# The first row comes as close as this model can to the input's pace on a
# 2-core CPU (at its smallest size, 32, the model was still about 10 times
# slower than the input), so that end to end shows how the two share the
# cores; the second is the paper's input size.
DEFAULT_ROWS = 'A:4:16:32,A:4:2:224'


def parse_rows(text: str, size: int) -> list[tuple[str, int, int, int]]:
  """'A:8:8:48,A+pool(I)+pool(F):4:2' -> [(fusion, frames, batch, size)]."""
  rows = []
  for item in text.split(','):
    fusion, *numbers = item.split(':')
    if len(numbers) not in (2, 3):
      raise ValueError(f'row {item!r} is not fusion:K:batch[:size]')
    frames, batch = int(numbers[0]), int(numbers[1])
    rows.append((fusion, frames, batch,
                 int(numbers[2]) if len(numbers) == 3 else size))
  return rows


def row_config(fusion: str, frames: int, batch: int, size: int, dtype: str,
               data_dir: str):
  config = ucf101.get_config(f'fusion={fusion},frames={frames}')
  config.image_size = size
  config.batch_size = batch
  config.accumulation_steps = 1
  config.model.dtype = dtype
  config.dataset.data_dir = data_dir
  config.dataset.build = False
  return config


def batches_ahead() -> int:
  """Batches the pipeline holds ahead of its reader once its buffers are
  full: each worker process's, DevicePrefetch's two and the one its thread
  holds."""
  workers = len(os.sched_getaffinity(0))
  return pipeline._WORKER_BUFFER * workers + 3  # pylint: disable=protected-access


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

  def steps(self, batches, count: int) -> float:
    """Seconds of `count` training steps on `batches`, dispatched back to
    back as the training loop does, until the last one's outputs are ready."""
    start = time.perf_counter()
    for _ in range(count):
      self.state, step_metrics = self.step_fn(self.state, next(batches))
    jax.block_until_ready((self.state, step_metrics))
    return time.perf_counter() - start


def read_input(row: Row, count: int) -> tuple[float, dict]:
  """Seconds of reading `count` batches back to back, and the last batch.

  Read between training steps, the pipeline would have refilled its
  buffers each time and look free; back to back it shows its rate.
  """
  iterator = row.batches()
  for _ in range(batches_ahead()):
    next(iterator)
  start = time.perf_counter()
  for _ in range(count):
    local = next(iterator)
  seconds = time.perf_counter() - start
  iterator.close()
  return seconds, local


def measure(row: Row, steps: int, input_batches: int) -> dict:
  """Clips/s of input, model and end to end, one after the other.

  Not interleaved: the pipeline's workers would refill their buffers
  during model steps, and their work would be counted against the model
  instead of against end to end.
  """
  load_before = os.getloadavg()
  input_s, local = read_input(row, input_batches)
  device_batch = parallel.global_batch(local, row.mesh)
  compile_s = row.steps(itertools.repeat(device_batch), 1)
  model_s = row.steps(itertools.repeat(device_batch), steps)
  with parallel.DevicePrefetch(
      row.batches(), row.mesh) as batches:
    row.steps(batches, batches_ahead())
    end_to_end_s = row.steps(batches, steps)

  batch = row.config.batch_size
  result = {'fusion': row.config.model.fusion, 'frames': row.config.frames,
            'batch': batch, 'size': row.config.image_size,
            'dtype': row.config.model.dtype, 'steps': steps,
            'input_batches': input_batches, 'warm_up_batches': batches_ahead(),
            'compile_s': compile_s,
            'input_clips_per_s': input_batches * batch / input_s,
            'model_clips_per_s': steps * batch / model_s,
            'end_to_end_clips_per_s': steps * batch / end_to_end_s}
  input_speed, model_speed = (result['input_clips_per_s'],
                              result['model_clips_per_s'])
  result['bound'] = 'input' if input_speed < model_speed else 'compute'
  result['overlap'] = (result['end_to_end_clips_per_s'] /
                       min(input_speed, model_speed))
  result['shared_clips_per_s'] = 1 / (1 / input_speed + 1 / model_speed)
  result['load_average'] = {'before': load_before, 'after': os.getloadavg()}
  return result


def format_table(results: list[dict]) -> str:
  lines = [f'{"fusion":<18} {"K":>3} {"B":>3} {"size":>4} {"input":>8} '
           f'{"model":>8} {"e2e":>8} {"bound":>8} {"e2e/bound":>9} '
           f'{"shared":>8} {"e2e/":>7} {"compile":>8} {"load":>9}',
           f'{"":<18} {"":>3} {"":>3} {"":>4} {"clips/s":>8} {"clips/s":>8} '
           f'{"clips/s":>8} {"":>8} {"":>9} {"clips/s":>8} {"shared":>7} '
           f'{"s":>8} {"1 min":>9}']
  for r in results:
    load = r['load_average']
    lines.append(
        f'{r["fusion"]:<18} {r["frames"]:>3} {r["batch"]:>3} {r["size"]:>4} '
        f'{r["input_clips_per_s"]:>8.2f} {r["model_clips_per_s"]:>8.2f} '
        f'{r["end_to_end_clips_per_s"]:>8.2f} {r["bound"]:>8} '
        f'{r["overlap"]:>9.2f} {r["shared_clips_per_s"]:>8.2f} '
        f'{r["end_to_end_clips_per_s"] / r["shared_clips_per_s"]:>7.2f} '
        f'{r["compile_s"]:>8.1f} '
        f'{load["before"][0]:>4.1f}-{load["after"][0]:<4.1f}')
  return '\n'.join(lines)


def build_generated(root: pathlib.Path, videos: int, frames: int
                    ) -> pathlib.Path:
  """Builds ucf101_frames/split1 from generated videos; returns its data_dir."""
  # Only here: building needs TensorFlow and PyAV, reading a built one not.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from benchmarks import input as input_benchmark  # pylint: disable=g-import-not-at-top
  input_benchmark.write_manual_dir(root / 'manual', videos, frames, seed=0)
  builder = tfds.builder('ucf101_frames/split1', data_dir=str(root / 'data'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(root / 'manual')))
  return root / 'data'


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n', maxsplit=1)[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', default=DEFAULT_ROWS,
                      help='comma-separated fusion:K:batch[:size]')
  parser.add_argument('--size', type=int, default=224,
                      help='image size of rows that do not give one')
  parser.add_argument('--dtype', default='float32',
                      choices=('float32', 'bfloat16'),
                      help='the model\'s compute dtype (config.model.dtype)')
  parser.add_argument('--steps', type=int, default=20,
                      help='timed model and end-to-end steps per row')
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
  rows = parse_rows(args.rows, args.size)

  mesh = parallel.make_mesh()
  results = {**provenance.git_state(REPO),
             'date': datetime.date.today().isoformat(),
             'command': ' '.join([os.path.relpath(__file__, REPO)] + (
                 sys.argv[1:] if argv is None else list(argv))),
             'machine': f'{platform.processor() or platform.machine()}, '
                        f'{len(os.sched_getaffinity(0))} cores',
             'devices': [str(d) for d in jax.devices()],
             'device_kind': jax.devices()[0].device_kind,
             'jax': jax.__version__, 'rows': []}
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or str(build_generated(
        pathlib.Path(tmp), args.videos, args.video_frames))
    for fusion, frames, batch, size in rows:
      config = row_config(fusion, frames, batch, size, args.dtype, data_dir)
      dataset = datasets.load_dataset(config.dataset)
      results['rows'].append(measure(Row(config, dataset, mesh), args.steps,
                                      args.input_batches))
      pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + '\n')
  print(f'{results["machine"]}, {len(results["devices"])} '
        f'{results["device_kind"]} device(s), {args.dtype}, {args.steps} '
        f'steps, {args.input_batches} input batches each')
  print(format_table(results['rows']))


if __name__ == '__main__':
  main()
