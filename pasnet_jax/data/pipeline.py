"""Grain input pipeline: TSN clips of K frames from the video datasets.

Batches are dicts of numpy arrays
  'video': uint8 (B, K, H, W, 3) RGB, 0..255 (the model normalises),
           or (B, V, K, H, W, 3) for multi-view evaluation (V views);
  'label': int32 (B,);
  'mask':  bool (B,), evaluation batches only: False on the padding of
           the last batch.

Clips are read by index from the ArrayRecord files of a prepared TFDS
dataset (`ucf101_frames`, `hmdb51_frames`, `synthetic_actions`) through
`records`, without TensorFlow: of each video only the records of the K
sampled frames are read and decoded (one record per frame). Worker
processes (Grain's `mp_prefetch`, one per core by default) read, decode,
crop, resize and flip whole batches and stack them
into shared memory they reuse (`handoff`); the main process only maps them.
The crop, resize and flip stay in the workers: with OpenCV they took 4 ms
per K = 16 clip at 224, a jitted JAX version on the same frames 74 ms on a
2-core machine's CPU device (benchmarks/input.py), and on a GPU it would
make the workers ship uncropped frames of differing sizes.

Resuming training: the training stream is a pure function of (seed,
process_index, process_count, batch_size) and the batch number, so its whole
state is the number of batches already taken. Store the training step in the
checkpoint and pass it back as `start_batch`: the stream continues with the
same clips, crops and flips it would have produced. The number of workers
does not change the stream.

Multi-host: each process reads its own contiguous part of the split, the
first (size % process_count) parts one video longer, as `tfds.even_splits`
cuts it. Evaluation pads every process to the same number of batches, so
every test video is counted exactly once, however the split divides.
"""

import atexit
import ctypes
import functools
import math
import os
import threading
import time
from typing import Iterator, Sequence

from absl import flags
import cv2
import grain
import grain.multiprocessing
import numpy as np
import simplejpeg

from pasnet_jax.data import handoff
from pasnet_jax.data import records
from pasnet_jax.data import sampling
from pasnet_jax.data.errors import DatasetError

# ECO-pytorch's GroupMultiScaleCrop: crop sides as fractions of the short side.
MULTI_SCALE_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)
EVAL_RESIZE = 256
# Batches each worker process keeps ready.
_WORKER_BUFFER = 2
# Tags that keep the shuffle's and the clips' random streams apart.
_SHUFFLE_STREAM, _CLIP_STREAM = 0, 1
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

# A worker process decodes with one thread: the processes use the cores.
cv2.setNumThreads(1)


def _process_shard(size: int, process_index: int, process_count: int
                   ) -> tuple[int, int]:
  """(start, length) of this process's contiguous part of `size` examples."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in '
                     f'[0, {process_count})')
  base, extra = divmod(size, process_count)
  start = process_index * base + min(process_index, extra)
  return start, base + (process_index < extra)


def _damaged_jpeg(description: str, error: ValueError) -> DatasetError:
  return DatasetError(f'{description} holds a damaged JPEG frame ({error}); '
                      'build the dataset again.')


def _frame_shape(jpegs: Sequence[bytes | memoryview], description: str
                 ) -> tuple[int, int]:
  """(height, width) that all of a video's JPEG frames share."""
  try:
    shapes = {simplejpeg.decode_jpeg_header(jpeg)[:2] for jpeg in jpegs}
    if len(shapes) != 1:
      raise ValueError(f'frames of different sizes {sorted(shapes)}')
  except ValueError as e:
    raise _damaged_jpeg(description, e) from e
  return shapes.pop()


def decode_frames(jpegs: Sequence[bytes | memoryview], description: str
                  ) -> np.ndarray:
  """uint8 (N, H, W, 3) RGB from N JPEG frames of one video."""
  # Straight into the clip's array: a stack of the decoded frames is a
  # second pass over them.
  frames = np.empty((len(jpegs), *_frame_shape(jpegs, description), 3),
                    np.uint8)
  try:
    for jpeg, frame in zip(jpegs, frames):
      simplejpeg.decode_jpeg(jpeg, colorspace='RGB', buffer=frame)
  except ValueError as e:
    raise _damaged_jpeg(description, e) from e
  return frames


def multi_scale_crop_window(height: int, width: int, rng: np.random.Generator,
                            scales=MULTI_SCALE_CROP_SCALES,
                            max_aspect_distortion: int = 1
                            ) -> tuple[int, int, int, int]:
  """(y, x, h, w) as ECO-pytorch's GroupMultiScaleCrop picks it.

  Crop sides are scales of the short side; height and width take scales at
  most `max_aspect_distortion` steps apart (the aspect jitter); the crop
  sits at a corner or the centre.
  """
  sides = [int(min(height, width) * s) for s in scales]
  pairs = [(i, j) for i in range(len(scales)) for j in range(len(scales))
           if abs(i - j) <= max_aspect_distortion]
  i, j = pairs[rng.integers(len(pairs))]
  crop_h, crop_w = sides[i], sides[j]
  h_step, w_step = (height - crop_h) // 4, (width - crop_w) // 4
  # Top-left, top-right, bottom-left, bottom-right, centre.
  offsets = [(0, 0), (0, 4 * w_step), (4 * h_step, 0),
             (4 * h_step, 4 * w_step), (2 * h_step, 2 * w_step)]
  y, x = offsets[rng.integers(len(offsets))]
  return y, x, crop_h, crop_w


def _resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear (half-pixel centres, as tf.image.resize) resize of
  (N, h, w, 3) uint8 frames to (N, height, width, 3)."""
  if frames.shape[1:3] == (height, width):
    return frames
  out = np.empty((len(frames), height, width, 3), np.uint8)
  for frame, resized in zip(frames, out):
    cv2.resize(frame, (width, height), dst=resized,
               interpolation=cv2.INTER_LINEAR)
  return out


def crop_resize_flip(frame: np.ndarray, window: tuple[int, int, int, int],
                     mirror: bool, out: np.ndarray) -> None:
  """Writes `frame`'s window (y, x, h, w), resized bilinearly to out's
  size and mirrored if `mirror`, into `out` (uint8 (S, S, 3))."""
  y, x, h, w = window
  size = out.shape[1], out.shape[0]
  if not mirror:
    cv2.resize(frame[y:y + h, x:x + w], size, dst=out,
               interpolation=cv2.INTER_LINEAR)
    return
  # OpenCV's flip: NumPy's copy of clip[:, :, ::-1] moves 3-byte pixels
  # one at a time and took 5.7 ms of a K = 16 clip's 19 at 224.
  cv2.flip(cv2.resize(frame[y:y + h, x:x + w], size,
                      interpolation=cv2.INTER_LINEAR), 1, dst=out)


def augmented_clip(jpegs: Sequence[bytes | memoryview], description: str,
                   image_size: int, rng: np.random.Generator,
                   scales=MULTI_SCALE_CROP_SCALES,
                   max_aspect_distortion: int = 1,
                   flip: bool = True) -> np.ndarray:
  """The K JPEG frames of a clip decoded, with one multi-scale crop and one
  flip for all of them.

  Each frame is cropped, resized and flipped right after it is decoded,
  while it is in the cache: at 224, 18.1 ms a K = 16 clip against 14.8 +
  4.2 for decoding all K into one array and resizing them after
  (`worker_ms_per_clip_k16` of benchmarks/input.py, run 79489e8).

  Args:
    jpegs: the K frames of one video.
    rng: draws the crop window, then the flip.

  Returns:
    uint8 (K, image_size, image_size, 3).
  """
  height, width = _frame_shape(jpegs, description)
  window = multi_scale_crop_window(height, width, rng, scales,
                                   max_aspect_distortion)
  mirror = flip and rng.random() < 0.5
  frame = np.empty((height, width, 3), np.uint8)
  clip = np.empty((len(jpegs), image_size, image_size, 3), np.uint8)
  for jpeg, out in zip(jpegs, clip):
    try:
      simplejpeg.decode_jpeg(jpeg, colorspace='RGB', buffer=frame)
    except ValueError as e:
      raise _damaged_jpeg(description, e) from e
    crop_resize_flip(frame, window, mirror, out)
  return clip


class TrainClip:
  """Position in the endless stream -> one augmented clip (in a worker)."""

  def __init__(self, reader: records.SplitReader, shard: tuple[int, int], *,
               seed: int, process_index: int, num_frames: int,
               image_size: int, scales, max_aspect_distortion: int,
               flip: bool):
    self._reader = reader
    self._shard_start, self._shard_size = shard
    self._stream = (seed, process_index)
    self._num_frames = num_frames
    self._image_size = image_size
    self._augment = dict(scales=scales,
                         max_aspect_distortion=max_aspect_distortion,
                         flip=flip)

  def __call__(self, position: int) -> dict[str, np.ndarray]:
    epoch, offset = divmod(position, self._shard_size)
    # A new permutation of the shard every epoch, computed per index.
    epoch_seed = np.random.SeedSequence(
        (*self._stream, _SHUFFLE_STREAM, epoch)).generate_state(1)[0]
    index = self._shard_start + grain.experimental.index_shuffle(
        offset, max_index=self._shard_size - 1, seed=int(epoch_seed), rounds=4)
    rng = np.random.default_rng((*self._stream, _CLIP_STREAM, position))
    chosen = sampling.train_indices(int(self._reader.videos.num_frames[index]),
                                    self._num_frames, rng)
    jpegs, label = self._reader.clip(index, chosen)
    return {'video': augmented_clip(
        jpegs, self._reader.video_description(index), self._image_size, rng,
        **self._augment), 'label': np.int32(label)}


def keep_freed_blocks() -> None:
  """Makes glibc's malloc keep freed blocks of up to 32 MB for reuse.

  Every clip allocates and frees blocks above glibc's initial mmap
  threshold of 128 kB: the decoded frame (260 kB at short side 256) and
  the clip (2.4 MB at K = 16 and 224). By default glibc maps such blocks
  afresh, or hands the top of the heap back to the kernel, so their pages
  are faulted in and zeroed again. When a clip read its whole video's
  record (6 MB at UCF-101's 320 x 240), K = 16 clips of benchmarks/input.py's
  videos took 50 ms of CPU each with the defaults and 19 ms with these
  settings; with one record per frame, a throwaway comparison was within
  this machine's noise. The cost: a worker keeps up to 256 MB of freed
  memory for reuse rather than returning it. Elsewhere than glibc nothing
  changes.
  """
  mallopt = getattr(ctypes.CDLL(None), 'mallopt', None)
  if mallopt is not None:
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)


def _start_worker(worker_index: int, worker_count: int, *, parent: int,
                  blocks_prefix: str) -> None:
  """Grain worker start-up: reuse of freed blocks, batches handed over in
  reused shared memory (`handoff`); the worker ends when the reading
  process, pid `parent`, dies.

  A worker outlives a parent killed with SIGKILL (by a user or the OOM
  killer) and would go on holding its memory and its output pipes. The
  parent's pid, as the worker sees it, changes when the parent is gone.
  The parent passes its pid rather than the worker reading it here: a
  worker still starting when the parent was killed would read the pid of
  the process it was handed to and watch that one for ever.
  """
  del worker_index, worker_count
  keep_freed_blocks()
  handoff.start_worker(blocks_prefix)

  def watch():
    while os.getppid() == parent:
      time.sleep(1.0)
    handoff.unlink_worker_blocks()
    os._exit(1)
  threading.Thread(target=watch, daemon=True).start()


@functools.cache
def _finish_shared_memory_deletions_at_exit() -> None:
  """Makes the process finish Grain's deletions of batches' shared memory
  before it exits.

  Grain unlinks a batch's shared memory when the array is dropped, on a
  background thread. Blocks still queued there when the program ends were
  reported by Python's resource tracker as "leaked shared_memory objects"
  after every evaluation (google/grain#398), which reads like a fault of
  the run. Both attributes are Grain's own (0.2.18); without them nothing
  changes.
  """
  arrays = grain.multiprocessing.SharedMemoryArray

  def finish():
    pool = getattr(arrays, '_del_thread_pool', None)
    disable = getattr(arrays, '_disable_async_del', None)
    if pool is None or disable is None:
      return
    pool.close()
    pool.join()
    # Arrays dropped after this (at interpreter teardown) are unlinked at
    # once rather than queued to the closed pool.
    disable()
  atexit.register(finish)


class _Batch:
  """Batch number -> the `size` examples of its rows, stacked (in a worker,
  into reused shared memory: `handoff.stack`)."""

  def __init__(self, example, size: int):
    self._example = example
    self._size = size

  def __call__(self, batch: int):
    rows = range(batch * self._size, (batch + 1) * self._size)
    return handoff.stack(map(self._example, rows), self._size)


class Batches:
  """Numpy batches from worker processes; each iteration starts its own.

  A worker that dies, or a record that cannot be read, ends the iteration
  with a DatasetError naming the dataset.
  """

  def __init__(self, batches: grain.MapDataset, num_workers: int,
               description: str):
    self._batches = batches
    self.num_workers = num_workers
    self._description = description

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    # Grain 0.2.18 reads an absl flag when it starts workers, which fails in
    # a program that has not parsed absl flags (google/grain#1355); such a
    # program gets the flags' defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    if self.num_workers:
      _finish_shared_memory_deletions_at_exit()
    receiver = handoff.Receiver()
    iterator = iter(self._batches.to_iter_dataset(grain.ReadOptions(
        num_threads=0, prefetch_buffer_size=0)).mp_prefetch(
            grain.MultiprocessingOptions(num_workers=self.num_workers,
                                         per_worker_buffer_size=_WORKER_BUFFER),
            worker_init_fn=functools.partial(
                _start_worker, parent=os.getpid(),
                blocks_prefix=receiver.prefix)))
    try:
      for batch in iterator:
        yield receiver.open(batch)
    except RuntimeError as e:
      # Grain's report of a worker process that exited.
      raise DatasetError(f'Reading {self._description} failed: {e}') from e
    finally:
      iterator.close()
      receiver.close()


def _worker_count(num_workers: int | None) -> int:
  if num_workers is None or num_workers < 0:
    return len(os.sched_getaffinity(0))
  return num_workers


def clip_batches(example, *, batch_size: int, batches: range,
                 num_workers: int | None, description: str) -> Batches:
  """The numbered `batches` of `example` (row -> dict of arrays), row
  b * batch_size + i being row i of batch b, read by `num_workers` worker
  processes (None or -1: one per core; 0: in this process)."""
  numbers = grain.MapDataset.range(batches.start, batches.stop)
  return Batches(numbers.map(_Batch(example, batch_size)),
                 _worker_count(num_workers), description)


def make_train_dataset(dataset, *, num_frames: int, image_size: int,
                       batch_size: int, seed: int, split: str = 'train',
                       process_index: int = 0, process_count: int = 1,
                       start_batch: int = 0, data_dir: str | None = None,
                       scales=MULTI_SCALE_CROP_SCALES,
                       max_aspect_distortion: int = 1, flip: bool = True,
                       num_workers: int | None = None) -> Batches:
  """Endless shuffled training batches of this process's part of `split`.

  Args:
    dataset: a name, e.g. 'ucf101_frames/split1', or a TFDS builder.
    num_frames: K, frames per clip (one random frame of each of K segments).
    image_size: side of the square crops.
    batch_size: clips per batch of this process.
    seed: non-negative; with process_index it fixes the order (a new
      permutation of the shard every epoch), frames, crops and flips.
    start_batch: batches this process has already taken (the training step
      when resuming); the stream continues exactly where it stopped.
    scales, max_aspect_distortion, flip: the multi-scale crop and flip.
    num_workers: reading processes; None or -1: one per core; 0: read in
      this process.

  Returns:
    An endless iterable of {'video', 'label'} batches.
  """
  if seed < 0:
    raise ValueError(f'seed must be non-negative, got {seed}')
  prepared = records.prepared_dataset(dataset, data_dir)
  reader = records.SplitReader(prepared, split)
  shard = _process_shard(len(reader), process_index, process_count)
  if shard[1] == 0:
    raise DatasetError(f'Process {process_index} of {process_count} has no '
                       f'{split} examples of {prepared.name}.')
  clip = TrainClip(reader, shard, seed=seed, process_index=process_index,
                   num_frames=num_frames, image_size=image_size,
                   scales=scales, max_aspect_distortion=max_aspect_distortion,
                   flip=flip)
  return clip_batches(
      clip, batch_size=batch_size,
      batches=range(start_batch, np.iinfo(np.int64).max // batch_size),
      num_workers=num_workers, description=reader.description)


def _resize_short_side(frames: np.ndarray, size: int) -> np.ndarray:
  """uint8 frames (N, H, W, 3) resized so that min(H, W) == size."""
  height, width = frames.shape[1:3]
  scale = size / min(height, width)
  return _resize(frames, max(int(np.round(height * scale)), size),
                 max(int(np.round(width * scale)), size))


def _check_eval_views(image_size: int, resize_size: int, num_crops: int):
  if num_crops not in (1, 3):
    raise ValueError(f'num_crops must be 1 or 3, got {num_crops}')
  if resize_size < image_size:
    raise ValueError(f'resize_size {resize_size} is smaller than the crop '
                     f'{image_size}')


def _eval_crops(frames: np.ndarray, image_size: int, num_crops: int
                ) -> np.ndarray:
  """(num_crops, N, image_size, image_size, 3) crops along the long side.

  1 crop: the centre; 3 crops: start, centre and end of the long side.
  """
  height, width = frames.shape[1:3]
  centre_y = int(np.round((height - image_size) / 2))
  centre_x = int(np.round((width - image_size) / 2))
  if num_crops == 1:
    corners = [(centre_y, centre_x)]
  elif width >= height:
    corners = [(centre_y, 0), (centre_y, centre_x),
               (centre_y, width - image_size)]
  else:
    corners = [(0, centre_x), (centre_y, centre_x),
               (height - image_size, centre_x)]
  return np.stack([frames[:, y:y + image_size, x:x + image_size]
                   for y, x in corners])


def eval_views(frames: np.ndarray, image_size: int,
               resize_size: int = EVAL_RESIZE, num_crops: int = 1
               ) -> np.ndarray:
  """uint8 (num_crops, N, S, S, 3) from uint8 frames (N, H, W, 3): short
  side resized to `resize_size`, then centre (or 3) crops."""
  _check_eval_views(image_size, resize_size, num_crops)
  return _eval_crops(_resize_short_side(frames, resize_size), image_size,
                     num_crops)


class _EvalClip:
  """Row of the padded evaluation stream -> the views of one video."""

  def __init__(self, reader: records.SplitReader, shard: tuple[int, int], *,
               num_frames: int, image_size: int, resize_size: int,
               num_clips: int, num_crops: int):
    self._reader = reader
    self._shard_start, self._shard_size = shard
    self._num_frames = num_frames
    self._image_size = image_size
    self._resize_size = resize_size
    self._num_clips = num_clips
    self._num_crops = num_crops
    num_views = num_clips * num_crops
    view_shape = (num_frames, image_size, image_size, 3)
    self._video_shape = view_shape if num_views == 1 else (num_views,
                                                           *view_shape)

  def __call__(self, row: int) -> dict[str, np.ndarray]:
    if row >= self._shard_size:
      return {'video': np.zeros(self._video_shape, np.uint8),
              'label': np.int32(0), 'mask': np.False_}
    index = self._shard_start + row
    num_frames = int(self._reader.videos.num_frames[index])
    chosen = np.concatenate([
        sampling.centre_indices(num_frames, self._num_frames, c,
                                self._num_clips)
        for c in range(self._num_clips)])
    jpegs, label = self._reader.clip(index, chosen)
    frames = decode_frames(jpegs, self._reader.video_description(index))
    views = eval_views(frames, self._image_size, self._resize_size,
                       self._num_crops)
    # (crops, clips * K, S, S, 3) -> (clips * crops, K, S, S, 3), clip-major.
    views = views.reshape(self._num_crops, self._num_clips, self._num_frames,
                          *views.shape[2:]).swapaxes(0, 1)
    return {'video': np.ascontiguousarray(views.reshape(self._video_shape)),
            'label': np.int32(label), 'mask': np.True_}


def make_eval_dataset(dataset, *, num_frames: int, image_size: int,
                      batch_size: int, split: str = 'test',
                      resize_size: int = EVAL_RESIZE, num_clips: int = 1,
                      num_crops: int = 1, process_index: int = 0,
                      process_count: int = 1, data_dir: str | None = None,
                      num_workers: int | None = None) -> Batches:
  """Every video of this process's part of `split` once, then padding.

  Each video gives num_clips x num_crops views: clips of K frames at evenly
  spread offsets within the K segments (the centre for one clip), each
  resized to short side `resize_size` and cut into 1 (centre) or 3 crops.
  Every process yields the same number of batches,
  ceil(ceil(split size / process_count) / batch_size); rows past this
  process's videos have mask False, label 0 and zero frames.

  Returns:
    A finite iterable of {'video', 'label', 'mask'} batches; 'video' is
    (B, K, S, S, 3), or (B, V, K, S, S, 3) with V = num_clips * num_crops
    views when V > 1 (average the scores over V).
  """
  _check_eval_views(image_size, resize_size, num_crops)
  prepared = records.prepared_dataset(dataset, data_dir)
  reader = records.SplitReader(prepared, split)
  if not len(reader):
    raise DatasetError(f'{prepared.name} split {split!r} is empty.')
  shard = _process_shard(len(reader), process_index, process_count)
  num_batches = math.ceil(math.ceil(len(reader) / process_count) / batch_size)
  clip = _EvalClip(reader, shard, num_frames=num_frames, image_size=image_size,
                   resize_size=resize_size, num_clips=num_clips,
                   num_crops=num_crops)
  return clip_batches(clip, batch_size=batch_size, batches=range(num_batches),
                      num_workers=num_workers, description=reader.description)


def preprocess_for_prediction(frames: np.ndarray, *, num_frames: int,
                              image_size: int,
                              resize_size: int = EVAL_RESIZE) -> np.ndarray:
  """One evaluation clip from a decoded video, as `make_eval_dataset` makes it.

  Args:
    frames: uint8 (N, H, W, 3) RGB, e.g. from `decode_video`.

  Returns:
    uint8 (K, image_size, image_size, 3): the centre frame of each of the K
    segments, short side resized to `resize_size`, centre crop.
  """
  if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f'expected frames (N, H, W, 3) with N > 0, got '
                     f'{frames.shape}')
  clip = frames[sampling.centre_indices(len(frames), num_frames)]
  return eval_views(clip, image_size, resize_size)[0]
