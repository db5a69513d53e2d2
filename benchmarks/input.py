"""Input pipeline benchmark: build time, disk, clips/s, and decoding only K.

Generates UCF-101-like videos (320 x 240, 25 fps, Xvid-like MPEG-4 at about
the archive's bit rate, textured moving content), builds `ucf101_frames`
from them as unpacked folders, then measures:
  * build seconds per 1,000 videos and stored bytes per frame (the start-up
    of the worker processes, once per split whatever its size, is measured
    apart and left out of the per-video figure);
  * training and evaluation clips/s of `pasnet_jax.data.pipeline` (one
    worker process per core) for K = 8 and 16 at 224 x 224, batch 8: the
    median of three stretches of --batches / 3 training batches, and of three
    evaluation passes over the train split, each timed after worker start-up
    and the batches the workers prefetched meanwhile;
  * the JPEG decode limit: clips/s of decoding the K sampled JPEGs of clips
    alone, with the pipeline's decoder in a pool of one process per core,
    with nothing else (no reading, parsing, cropping or batching); at
    K = 16 it and training are timed in alternating rounds (--rounds), and
    the fraction is the median of the rounds' own;
  * the same training pipeline with Grain stacking each batch and handing
    it over in new shared memory, as the pipeline did before it reused its
    own (pasnet_jax/data/handoff.py);
  * the same training pipeline with the whole split read and parsed once
    per worker (reading made free, though each worker then holds the
    split's frames in memory);
  * a worker's milliseconds per K = 16 clip, step by step (read and parse
    the K frame records; decode, crop, resize and flip the K frames, and
    the same decoding the K frames whole first), timed in one process;
  * what a page of new shared memory costs on first touch and after: what
    handing each batch over in new shared memory costs;
  * where the crop, resize and flip should run: milliseconds per K = 16
    clip of the workers' OpenCV version and of a jitted JAX version on the
    default JAX device, on the same decoded frames (median of repeats).
Prints a table and writes the figures as JSON, with the load average: on a
shared machine the figures move with the other work on it.

  python benchmarks/input.py --out benchmarks/input_results.json
"""

import argparse
import contextlib
from concurrent import futures
import functools
import io
import json
import math
import multiprocessing
from multiprocessing import shared_memory
import os
import pathlib
import platform
import sys
import tempfile
import time

import av
import grain
import jax
import jax.numpy as jnp
import numpy as np
import simplejpeg
import tensorflow_datasets as tfds

# This checkout's package, which its results describe, even where another
# is installed.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from pasnet_jax import provenance  # pylint: disable=g-import-not-at-top
import pasnet_jax.data  # registers the builders  # pylint: disable=unused-import,g-import-not-at-top
from pasnet_jax.data import frames_builder  # pylint: disable=g-import-not-at-top
from pasnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from pasnet_jax.data import records  # pylint: disable=g-import-not-at-top
from pasnet_jax.data import sampling  # pylint: disable=g-import-not-at-top
from pasnet_jax.data import splits  # pylint: disable=g-import-not-at-top

WIDTH, HEIGHT, FPS = 320, 240, 25
# Batches per core read before timing: the workers' prefetched batches.
_WARM_UP_BATCHES_PER_CORE = 2


def _pink_noise(rng, height, width):
  """A colour texture with natural images' 1/f spectrum, values 0..255."""
  fy = np.fft.fftfreq(height)[:, None]
  fx = np.fft.rfftfreq(width)[None]
  amplitude = 1 / np.maximum(np.hypot(fy, fx), 1 / max(height, width))
  channels = []
  for _ in range(3):
    spectrum = amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape))
    channel = np.fft.irfft2(spectrum, s=(height, width))
    channels.append((channel - channel.mean()) / channel.std())
  return np.clip(128 + 45 * np.stack(channels, -1), 0, 255)


def make_video(rng, num_frames: int) -> bytes:
  """A panning textured scene with a moving figure-sized blob and noise."""
  scene = _pink_noise(rng, HEIGHT * 2, WIDTH * 2)
  start = rng.integers(0, [HEIGHT, WIDTH])
  velocity = rng.uniform(-1.5, 1.5, 2)
  buffer = io.BytesIO()
  with av.open(buffer, 'w', format='avi') as container:
    stream = container.add_stream('mpeg4', rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, 'yuv420p'
    stream.bit_rate = 550_000
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for i in range(num_frames):
      y, x = np.clip(start + velocity * i, 0, [HEIGHT, WIDTH]).astype(int)
      frame = scene[y:y + HEIGHT, x:x + WIDTH].copy()
      cy, cx = HEIGHT / 2 + 30 * np.sin(i / 9), WIDTH / 2 + 60 * np.sin(i / 23)
      blob = ((yy - cy) / 70) ** 2 + ((xx - cx) / 25) ** 2 < 1
      frame[blob] = frame[blob] * 0.3 + 60
      frame += rng.normal(0, 3, frame.shape)
      image = av.VideoFrame.from_ndarray(
          np.clip(frame, 0, 255).astype(np.uint8), format='rgb24')
      for packet in stream.encode(image):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return buffer.getvalue()


def write_manual_dir(root: pathlib.Path, num_videos: int, num_frames: int,
                     seed: int) -> int:
  """UCF-101-like unpacked folders; returns the bytes of the videos."""
  rng = np.random.default_rng(seed)
  classes = splits.UCF101_CLASSES
  lists = root / 'ucfTrainTestlist'
  lists.mkdir(parents=True)
  (lists / 'classInd.txt').write_text(
      ''.join(f'{i + 1} {c}\r\n' for i, c in enumerate(classes)))
  train, test, total = [], [], 0
  for i in range(num_videos):
    name = classes[i % len(classes)]
    path = f'{name}/v_{name}_g{i // len(classes) + 8:02d}_c01.avi'
    data = make_video(rng, num_frames)
    total += len(data)
    (root / 'UCF-101' / name).mkdir(parents=True, exist_ok=True)
    (root / 'UCF-101' / path).write_bytes(data)
    # Every fourth video is a test video, as in UCF-101's roughly 3:1 split.
    if i % 4 == 3:
      test.append(path + '\r\n')
    else:
      train.append(f'{path} {i % len(classes) + 1}\r\n')
  (lists / 'trainlist01.txt').write_text(''.join(train))
  (lists / 'testlist01.txt').write_text(''.join(test))
  return total


def _warm_up_batches() -> int:
  """Batches the worker processes prefetch: read before timing."""
  return _WARM_UP_BATCHES_PER_CORE * len(os.sched_getaffinity(0))


def _stretch_rates(batches, num_batches: int, batch_size: int,
                   stretches: int) -> list[float]:
  """Clips/s of `stretches` stretches of `num_batches` in all of an endless
  stream, after worker start-up and the batches prefetched meanwhile; the
  workers are stopped at the end."""
  iterator = iter(batches)
  for _ in range(_warm_up_batches() + 1):
    next(iterator)
  stretch = max(1, num_batches // stretches)
  rates = []
  for _ in range(stretches):
    start = time.perf_counter()
    for _ in range(stretch):
      next(iterator)
    rates.append(stretch * batch_size / (time.perf_counter() - start))
  iterator.close()
  return rates


def clips_per_second(batches, num_batches: int, batch_size: int) -> float:
  """Median clips/s of three stretches of an endless stream."""
  return float(np.median(_stretch_rates(batches, num_batches, batch_size, 3)))


def pass_clips_per_second(batches, num_batches: int) -> float:
  """Median clips/s (real rows, not padding) of three passes over a finite
  stream of `num_batches`, each timed after worker start-up and the
  prefetched batches, up to its last batch (not the workers' shutdown)."""
  rates = []
  for _ in range(3):
    iterator = iter(batches)
    for _ in range(_warm_up_batches() + 1):
      next(iterator)
    start = time.perf_counter()
    clips = sum(int(next(iterator)['mask'].sum())
                for _ in range(num_batches - _warm_up_batches() - 1))
    rates.append(clips / (time.perf_counter() - start))
    iterator.close()
  return float(np.median(rates))


def sampled_jpegs(dataset: str, data_dir: str, num_frames: int
                  ) -> list[list[bytes]]:
  """The K JPEGs a training clip of each train video decodes."""
  reader = records.SplitReader(records.prepared_dataset(dataset, data_dir),
                               'train')
  rng = np.random.default_rng(0)
  clips = []
  for index in range(len(reader)):
    jpegs, _ = reader.clip(index, sampling.train_indices(
        int(reader.videos.num_frames[index]), num_frames, rng))
    # Copies: the decoding processes get them pickled.
    clips.append([bytes(jpeg) for jpeg in jpegs])
  return clips


_decoder_clips = []


def _keep_clips(clips):
  _decoder_clips[:] = clips


def _decode_clip(index: int) -> None:
  for jpeg in _decoder_clips[index % len(_decoder_clips)]:
    simplejpeg.decode_jpeg(jpeg, colorspace='RGB')


@contextlib.contextmanager
def _decoding_pool(clips: list[list[bytes]], num_clips: int):
  """Yields a function that returns the clips/s of decoding `num_clips` of
  `clips` alone in one process per core (the processes started and warm)."""
  workers = len(os.sched_getaffinity(0))
  context = multiprocessing.get_context('spawn')
  with futures.ProcessPoolExecutor(workers, mp_context=context,
                                   initializer=_keep_clips,
                                   initargs=(clips,)) as pool:
    chunk = max(1, num_clips // (4 * workers))
    list(pool.map(_decode_clip, range(2 * workers * chunk), chunksize=chunk))

    def rate() -> float:
      start = time.perf_counter()
      list(pool.map(_decode_clip, range(num_clips), chunksize=chunk))
      return num_clips / (time.perf_counter() - start)
    yield rate


def train_against_decode_limit(batches, clips: list[list[bytes]],
                               num_batches: int, batch_size: int, rounds: int
                               ) -> tuple[list[float], list[float]]:
  """(training clips/s, decode limit in clips/s), one of each per round.

  This machine's speed drifts by tens of percent within a run, so the
  fraction of the limit is taken from pairs timed seconds apart: each round
  times the decoding alone, then starts the training pipeline afresh and
  times one stretch of `num_batches` after its warm-up. The pipeline's
  workers are stopped before the next decoding, so the two never share the
  cores.
  """
  train, decode = [], []
  with _decoding_pool(clips, num_batches * batch_size) as rate:
    for _ in range(rounds):
      decode.append(rate())
      train += _stretch_rates(batches, num_batches, batch_size, 1)
  return train, decode


class _InMemorySplitReader(records.SplitReader):
  """The split's reader, with its process reading and parsing all of the
  split's frames on its first clip: reading then costs nothing."""
  _videos = None

  def clip(self, index: int, frames) -> tuple[list[memoryview], int]:
    if self._videos is None:
      read = super(_InMemorySplitReader, self).clip
      self._videos = [read(i, range(self.videos.num_frames[i]))
                      for i in range(len(self))]
    jpegs, label = self._videos[index]
    return [jpegs[frame] for frame in frames], label


def _train_clip(reader: records.SplitReader, num_frames: int
                ) -> pipeline.TrainClip:
  return pipeline.TrainClip(
      reader, (0, len(reader)), seed=0, process_index=0,
      num_frames=num_frames, image_size=224,
      scales=pipeline.MULTI_SCALE_CROP_SCALES, max_aspect_distortion=1,
      flip=True)


def _train_clips_per_second_from(reader: records.SplitReader, num_frames: int,
                                 batch_size: int, num_batches: int) -> float:
  """clips_per_second of the training pipeline (one worker per core) on
  `reader`; the workers' first batches are among those read before timing."""
  batches = pipeline.clip_batches(
      _train_clip(reader, num_frames), batch_size=batch_size,
      batches=range(np.iinfo(np.int64).max), num_workers=None,
      description=reader.description)
  return clips_per_second(batches, num_batches, batch_size)


def grain_handoff_train_clips_per_second(dataset: str, data_dir: str,
                                         num_frames: int, batch_size: int,
                                         num_batches: int) -> float:
  """The training pipeline's clips/s with batches stacked by Grain and
  handed over in new shared memory each, as before data/handoff.py."""
  reader = records.SplitReader(records.prepared_dataset(dataset, data_dir),
                               'train')
  positions = grain.MapDataset.range(np.iinfo(np.int64).max)
  batches = pipeline.Batches(
      positions.map(_train_clip(reader, num_frames)).batch(
          batch_size, drop_remainder=True),
      len(os.sched_getaffinity(0)), reader.description)
  return clips_per_second(batches, num_batches, batch_size)


def in_memory_train_clips_per_second(dataset: str, data_dir: str,
                                     num_frames: int, batch_size: int,
                                     num_batches: int) -> float:
  """The training pipeline's clips/s with reading and parsing made free."""
  reader = _InMemorySplitReader(records.prepared_dataset(dataset, data_dir),
                                'train')
  return _train_clips_per_second_from(reader, num_frames, batch_size,
                                      num_batches)


def worker_milliseconds(dataset: str, data_dir: str, num_frames: int
                        ) -> dict[str, float]:
  """Median milliseconds per training clip of each step a worker takes,
  timed one by one in this process with the workers' malloc settings:
  reading and parsing the K sampled frames' records; decoding, cropping,
  resizing and flipping them as the pipeline does, frame by frame; and,
  for comparison, in a second pass over all the clips (so that neither way
  finds the other's JPEGs in the cache), decoding all K into one array,
  then the crop, resize and flip of each."""
  pipeline.keep_freed_blocks()
  reader = records.SplitReader(records.prepared_dataset(dataset, data_dir),
                               'train')
  rng = np.random.default_rng(0)
  steps = {'read': [], 'decode_and_augment': [], 'decode_whole_clip': [],
           'augment_decoded_clip': []}

  def timed(step, function, *args):
    start = time.perf_counter()
    out = function(*args)
    steps[step].append(time.perf_counter() - start)
    return out
  clips = []
  for index in range(len(reader)):
    chosen = sampling.train_indices(int(reader.videos.num_frames[index]),
                                    num_frames, rng)
    jpegs, _ = timed('read', reader.clip, index, chosen)
    timed('decode_and_augment', pipeline.augmented_clip, jpegs, 'benchmark',
          224, rng)
    clips.append(jpegs)
  for jpegs in clips:
    frames = timed('decode_whole_clip', pipeline.decode_frames, jpegs,
                   'benchmark')
    timed('augment_decoded_clip', _augment_decoded, frames, 224, rng)
  return {step: float(np.median(seconds)) * 1e3
          for step, seconds in steps.items()}


def _augment_decoded(frames: np.ndarray, image_size: int,
                     rng: np.random.Generator) -> np.ndarray:
  """The pipeline's crop, resize and flip of a clip's decoded frames."""
  window = pipeline.multi_scale_crop_window(*frames.shape[1:3], rng)
  mirror = rng.random() < 0.5
  clip = np.empty((len(frames), image_size, image_size, 3), np.uint8)
  for frame, out in zip(frames, clip):
    pipeline.crop_resize_flip(frame, window, mirror, out)
  return clip


def fresh_page_microseconds(megabytes: int = 64) -> tuple[float, float]:
  """(first, second) touch of each 4 KiB page of new shared memory, in
  microseconds per page (median of 5). Each batch the workers hand over is
  new shared memory, so the first figure is paid on every page of every
  batch."""
  size, page = megabytes << 20, 4096
  first, second = [], []
  for _ in range(5):
    memory = shared_memory.SharedMemory(create=True, size=size)
    try:
      pages = np.frombuffer(memory.buf, np.uint8)[::page]
      for seconds in (first, second):
        start = time.perf_counter()
        pages[:] = 1
        seconds.append((time.perf_counter() - start) / len(pages) * 1e6)
      del pages
    finally:
      memory.close()
      memory.unlink()
  return float(np.median(first)), float(np.median(second))


@functools.partial(jax.jit, static_argnames='image_size')
def _jax_augment(frames, windows, flips, image_size: int):
  """The crop, resize and flip of `pipeline.augmented_clip` as a jitted batch
  function: uint8 frames (B, K, H, W, 3), windows (B, 4) int32 (y, x, h, w),
  flips (B,) bool -> uint8 (B, K, S, S, 3)."""
  def clip(video, window, flip):
    y, x, h, w = window.astype(jnp.float32)
    scale = jnp.stack([image_size / h, image_size / w])
    resized = jax.image.scale_and_translate(
        video.astype(jnp.float32), (len(video), image_size, image_size, 3),
        (1, 2), scale, -jnp.stack([y, x]) * scale, 'linear', antialias=False)
    resized = jnp.where(flip, resized[:, :, ::-1], resized)
    return jnp.clip(jnp.round(resized), 0, 255).astype(jnp.uint8)
  return jax.vmap(clip)(frames, windows, flips)


def augment_milliseconds(clips: list[list[bytes]], batch_size: int,
                         image_size: int) -> tuple[float, float]:
  """(OpenCV in the worker, jitted JAX on the default device) milliseconds
  per clip of the crop, resize and flip of decoded clips (median of 5)."""
  frames = np.stack([pipeline.decode_frames(c, 'benchmark')
                     for c in clips[:batch_size]])
  rng = np.random.default_rng(0)
  windows = np.array([pipeline.multi_scale_crop_window(*frames.shape[2:4], rng)
                      for _ in range(batch_size)], np.int32)
  flips = rng.random(batch_size) < 0.5

  def host():
    for video in frames:
      _augment_decoded(video, image_size, rng)

  def device():
    _jax_augment(jax.device_put(frames), windows, flips,
                 image_size).block_until_ready()

  device()  # compilation
  timings = []
  for fn in (host, device):
    seconds = []
    for _ in range(5):
      start = time.perf_counter()
      fn()
      seconds.append(time.perf_counter() - start)
    timings.append(float(np.median(seconds)) / batch_size * 1e3)
  return timings[0], timings[1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  # 3 in 4 are train videos: 120 give 15 batches per evaluation pass.
  parser.add_argument('--videos', type=int, default=160)
  parser.add_argument('--frames', type=int, default=175,
                      help='frames per video (UCF-101 averages 7.2 s at 25 fps)')
  parser.add_argument('--batches', type=int, default=45)
  parser.add_argument('--rounds', type=int, default=5,
                      help='alternating timings of training and the decode '
                           'limit at K = 16')
  parser.add_argument('--out', default='benchmarks/input_results.json')
  args = parser.parse_args()
  results = {**provenance.git_state(REPO),
             'machine': f'{platform.processor() or platform.machine()}, '
                        f'{len(os.sched_getaffinity(0))} cores',
             'videos': args.videos, 'frames_per_video': args.frames}
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    video_bytes = write_manual_dir(root / 'manual', args.videos, args.frames,
                                   seed=0)
    builder = tfds.builder('ucf101_frames/split1', data_dir=str(root / 'data'))
    start = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(root / 'manual')))
    build_seconds = time.perf_counter() - start
    start = time.perf_counter()
    list(frames_builder.map_in_workers(abs, [0, 0], 'worker start-up'))
    startup_seconds = time.perf_counter() - start
    stored = sum(f.stat().st_size for f in pathlib.Path(builder.data_dir)
                 .iterdir())
    frames = args.videos * args.frames
    results['build_seconds'] = build_seconds
    results['worker_startup_seconds_per_split'] = startup_seconds
    # Two splits, two pools of workers.
    results['build_seconds_per_1000_videos'] = (
        (build_seconds - 2 * startup_seconds) / args.videos * 1000)
    results['source_bytes_per_video'] = video_bytes / args.videos
    results['stored_bytes_per_frame'] = stored / frames
    results['stored_bytes_per_video'] = stored / args.videos

    batch = 8
    data_dir = str(root / 'data')
    results['load_average_before'] = os.getloadavg()
    clips = sampled_jpegs('ucf101_frames/split1', data_dir, 16)
    for k in (8, 16):
      train = pipeline.make_train_dataset(
          'ucf101_frames/split1', data_dir=data_dir, num_frames=k,
          image_size=224, batch_size=batch, seed=0)
      if k == 8:
        results['train_clips_per_s_k8'] = clips_per_second(
            train, args.batches, batch)
      else:
        train_rates, decode_rates = train_against_decode_limit(
            train, clips, args.batches, batch, args.rounds)
        results['rounds_k16'] = {'train_clips_per_s': train_rates,
                                 'jpeg_decode_limit_clips_per_s': decode_rates}
        results['train_clips_per_s_k16'] = float(np.median(train_rates))
        results['jpeg_decode_limit_clips_per_s_k16'] = float(
            np.median(decode_rates))
        # The median of the rounds' own fractions.
        results['train_fraction_of_decode_limit_k16'] = float(np.median(
            np.divide(train_rates, decode_rates)))
      # The train split: the test split is too short to time.
      num_train = records.prepared_dataset(
          'ucf101_frames/split1', data_dir).split_sizes['train']
      results[f'eval_clips_per_s_k{k}'] = pass_clips_per_second(
          pipeline.make_eval_dataset(
              'ucf101_frames/split1', data_dir=data_dir, split='train',
              num_frames=k, image_size=224, batch_size=batch),
          math.ceil(num_train / batch))
    results['train_clips_per_s_k16_grain_handoff'] = (
        grain_handoff_train_clips_per_second('ucf101_frames/split1', data_dir,
                                             16, batch, args.batches))
    results['grain_handoff_fraction_of_decode_limit_k16'] = (
        results['train_clips_per_s_k16_grain_handoff']
        / results['jpeg_decode_limit_clips_per_s_k16'])
    results['train_clips_per_s_k16_records_in_memory'] = (
        in_memory_train_clips_per_second('ucf101_frames/split1', data_dir, 16,
                                         batch, args.batches))
    results['records_in_memory_fraction_of_decode_limit_k16'] = (
        results['train_clips_per_s_k16_records_in_memory']
        / results['jpeg_decode_limit_clips_per_s_k16'])
    host_ms, device_ms = augment_milliseconds(clips, batch, 224)
    results['augment_ms_per_clip_k16_opencv_in_worker'] = host_ms
    results[f'augment_ms_per_clip_k16_jax_on_{jax.default_backend()}'] = (
        device_ms)
    (results['fresh_shared_memory_us_per_page'],
     results['touched_shared_memory_us_per_page']) = fresh_page_microseconds()
    # Last: it sets this process's malloc as the workers'.
    results['worker_ms_per_clip_k16'] = worker_milliseconds(
        'ucf101_frames/split1', data_dir, 16)
    results['load_average_after'] = os.getloadavg()

  print(f'{results["videos"]} videos x {results["frames_per_video"]} frames, '
        f'320 x 240, {results["machine"]}; load average '
        f'{results["load_average_before"][0]:.1f} before, '
        f'{results["load_average_after"][0]:.1f} after')
  print(f'build: {results["build_seconds"]:.0f} s, of which worker start-up '
        f'{results["worker_startup_seconds_per_split"]:.0f} s per split; '
        f'{results["build_seconds_per_1000_videos"] / 60:.1f} min per 1,000 '
        f'videos; {results["stored_bytes_per_frame"] / 1e3:.1f} kB per stored '
        f'frame ({results["source_bytes_per_video"] / 1e3:.0f} kB per source '
        'video)')
  print(f'{"K":>3} {"train clips/s":>14} {"eval clips/s":>13}')
  for k in (8, 16):
    print(f'{k:>3} {results[f"train_clips_per_s_k{k}"]:>14.1f} '
          f'{results[f"eval_clips_per_s_k{k}"]:>13.1f}')
  print(f'JPEG decode limit at K = 16: '
        f'{results["jpeg_decode_limit_clips_per_s_k16"]:.1f} clips/s; training '
        f'reaches {results["train_fraction_of_decode_limit_k16"]:.0%} of it')
  print('with Grain stacking each batch and handing it over in new shared '
        'memory (as before data/handoff.py), training gives '
        f'{results["train_clips_per_s_k16_grain_handoff"]:.1f} clips/s at '
        f'K = 16, {results["grain_handoff_fraction_of_decode_limit_k16"]:.0%} '
        'of the decode limit')
  print('with the frames in memory (reading and parsing free), training '
        f'gives {results["train_clips_per_s_k16_records_in_memory"]:.1f} '
        'clips/s at K = 16, '
        f'{results["records_in_memory_fraction_of_decode_limit_k16"]:.0%} of '
        'the decode limit')
  print('a worker\'s milliseconds per K = 16 clip, step by step: ' + ', '.join(
      f'{step} {ms:.2f}' for step, ms in results['worker_ms_per_clip_k16']
      .items()))
  print('new shared memory: '
        f'{results["fresh_shared_memory_us_per_page"]:.2f} us per 4 KiB page '
        f'on first touch, {results["touched_shared_memory_us_per_page"]:.3f} '
        'after')
  print(f'crop, resize and flip per K = 16 clip: {host_ms:.2f} ms with OpenCV '
        f'in a worker, {device_ms:.2f} ms jitted on '
        f'{jax.default_backend()}')
  pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
  main()
