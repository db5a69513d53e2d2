"""tf.data input pipeline: TSN clips of K frames from the video datasets.

Batches are dicts of
  'video': uint8 (B, K, H, W, 3) RGB, 0..255 (the model normalises),
           or (B, V, K, H, W, 3) for multi-view evaluation (V views);
  'label': int32 (B,);
  'mask':  bool (B,), False on the padding of the last evaluation batch.

Examples are read by index from the ArrayRecord files of a TFDS dataset
(`ucf101_frames`, `hmdb51_frames`, `synthetic_actions`), and of each video
only the K sampled JPEG frames are decoded.

Resuming training: the training stream is a pure function of (seed,
process_index, process_count, batch_size) and the batch number, so its whole
state is the number of batches already taken. Store the training step in the
checkpoint and pass it back as `start_batch`: the stream continues with the
same clips, crops and flips it would have produced.

Multi-host: each process reads its own part of the split (`tfds.even_splits`
with `process_count` parts). Evaluation pads every process to the same number
of batches, so every test video is counted exactly once, however the split
divides.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from pasnet_jax.data import sampling
from pasnet_jax.data.datasets import load_builder
from pasnet_jax.data.errors import DatasetError

# ECO-pytorch's GroupMultiScaleCrop: crop sides as fractions of the short side.
MULTI_SCALE_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)
EVAL_RESIZE = 256


def _shard_source(builder, split: str, process_index: int, process_count: int):
  """This process's part of `split`, readable by index as serialized bytes."""
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in '
                     f'[0, {process_count})')
  if split not in builder.info.splits:
    raise DatasetError(f'{builder.info.full_name} has no split {split!r}; it '
                       f'has {sorted(builder.info.splits)}.')
  shard = tfds.even_splits(split, n=process_count)[process_index]
  try:
    return builder.as_data_source(
        split=shard, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  except NotImplementedError as e:
    raise DatasetError(
        f'{builder.data_dir} holds {builder.info.file_format} files, which '
        'cannot be read by index. Delete it and build again with '
        'file_format="array_record" (the default of the pasnet_jax '
        'builders).') from e


def _read_example(builder, source, index):
  """The features of example `index` of `source`; frames stay JPEG bytes."""
  record = tf.numpy_function(lambda i: source[int(i)], [index], tf.string,
                             stateful=False)
  record.set_shape([])
  return builder.info.features.deserialize_example(
      record, decoders={'video': tfds.decode.SkipDecoding()})


def _sampled(fn, video, num_frames: int, *args):
  """Frame indices from a numpy sampling function, as an int64 tensor."""
  indices = tf.numpy_function(
      lambda t, *a: fn(int(t), *a).astype(np.int64),
      [tf.shape(video, out_type=tf.int64)[0], *args], tf.int64, stateful=False)
  indices.set_shape([num_frames])
  return indices


def _to_uint8(frames):
  return tf.cast(tf.clip_by_value(tf.round(frames), 0, 255), tf.uint8)


def _multi_scale_crop_window(height, width, scales, max_aspect_distortion,
                             seed):
  """[y, x, h, w] as ECO-pytorch's GroupMultiScaleCrop picks it.

  Crop sides are scales of the short side; height and width take scales at
  most `max_aspect_distortion` steps apart (the aspect jitter); the crop
  sits at a corner or the centre.
  """
  base = tf.cast(tf.minimum(height, width), tf.float32)
  sides = tf.cast(base * tf.constant(scales, tf.float32), tf.int32)
  pairs = tf.constant([(i, j) for i in range(len(scales))
                       for j in range(len(scales))
                       if abs(i - j) <= max_aspect_distortion], tf.int32)
  seeds = tf.random.experimental.stateless_split(seed, 2)
  pair = pairs[tf.random.stateless_uniform(
      [], seeds[0], 0, tf.shape(pairs)[0], dtype=tf.int32)]
  crop_h, crop_w = sides[pair[0]], sides[pair[1]]
  h_step, w_step = (height - crop_h) // 4, (width - crop_w) // 4
  # Top-left, top-right, bottom-left, bottom-right, centre.
  offsets = tf.stack([(0, 0), (0, 4 * w_step), (4 * h_step, 0),
                      (4 * h_step, 4 * w_step), (2 * h_step, 2 * w_step)])
  offset = offsets[tf.random.stateless_uniform([], seeds[1], 0, 5,
                                               dtype=tf.int32)]
  return tf.stack([offset[0], offset[1], crop_h, crop_w])


def augment_clip(jpegs, image_size: int, seed, scales=MULTI_SCALE_CROP_SCALES,
                 max_aspect_distortion: int = 1, flip: bool = True):
  """Decodes K JPEG frames with one crop and one flip for all of them.

  Only the crop window of each frame is decoded. Returns uint8
  (K, image_size, image_size, 3).
  """
  shape = tf.image.extract_jpeg_shape(jpegs[0])
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  window = _multi_scale_crop_window(shape[0], shape[1], scales,
                                    max_aspect_distortion, crop_seed)
  frames = tf.map_fn(
      lambda jpeg: tf.image.decode_and_crop_jpeg(jpeg, window, channels=3),
      jpegs, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  frames = tf.image.resize(frames, [image_size, image_size], method='bilinear')
  if flip:
    frames = tf.cond(tf.random.stateless_uniform([], flip_seed) < 0.5,
                     lambda: tf.reverse(frames, axis=[2]), lambda: frames)
  return _to_uint8(frames)


def make_train_dataset(dataset, *, num_frames: int, image_size: int,
                       batch_size: int, seed: int, split: str = 'train',
                       process_index: int = 0, process_count: int = 1,
                       start_batch: int = 0, data_dir: str | None = None,
                       scales=MULTI_SCALE_CROP_SCALES,
                       max_aspect_distortion: int = 1,
                       flip: bool = True) -> tf.data.Dataset:
  """Endless shuffled training batches of this process's part of `split`.

  Args:
    dataset: a TFDS builder or name, e.g. 'ucf101_frames/split1'.
    num_frames: K, frames per clip (one random frame of each of K segments).
    image_size: side of the square crops.
    batch_size: clips per batch of this process.
    seed: non-negative; with process_index it fixes the order (a new
      permutation of the shard every epoch), frames, crops and flips.
    start_batch: batches this process has already taken (the training step
      when resuming); the stream continues exactly where it stopped.
    scales, max_aspect_distortion, flip: the multi-scale crop and flip.

  Returns:
    A tf.data.Dataset of {'video', 'label', 'mask'} batches (mask all True).
  """
  if seed < 0:
    raise ValueError(f'seed must be non-negative, got {seed}')
  builder = load_builder(dataset, data_dir)
  source = _shard_source(builder, split, process_index, process_count)
  size = len(source)
  if size == 0:
    raise DatasetError(f'Process {process_index} of {process_count} has no '
                       f'{split} examples of {builder.info.full_name}.')
  stream_seed = tf.constant([seed, process_index], tf.int64)

  def clip(position):
    epoch_seed = tf.random.experimental.stateless_fold_in(
        stream_seed, position // size)
    index = tf.random.experimental.index_shuffle(
        position % size, epoch_seed, tf.constant(size - 1, tf.int64))
    example = _read_example(builder, source, index)
    video = example['video']
    indices = _sampled(
        lambda t, p: sampling.train_indices(
            t, num_frames, np.random.default_rng((seed, process_index, p))),
        video, num_frames, position)
    crop_seed = tf.random.experimental.stateless_fold_in(stream_seed, position)
    frames = augment_clip(tf.gather(video, indices), image_size, crop_seed,
                          scales, max_aspect_distortion, flip)
    return {'video': frames, 'label': tf.cast(example['label'], tf.int32),
            'mask': tf.constant(True)}

  positions = tf.data.Dataset.range(start_batch * batch_size,
                                    np.iinfo(np.int64).max)
  return (positions
          .map(clip, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))


def _resize_short_side(frames, size: int):
  """Float frames (..., H, W, 3) resized so that min(H, W) == size."""
  shape = tf.shape(frames)
  height, width = tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)
  scale = size / tf.minimum(height, width)
  new_size = tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32)
  return tf.image.resize(frames, tf.maximum(new_size, size), method='bilinear')


def _eval_crops(frames, image_size: int, num_crops: int):
  """(num_crops, ..., image_size, image_size, 3) crops along the long side.

  1 crop: the centre; 3 crops: start, centre and end of the long side.
  """
  shape = tf.shape(frames)
  height, width = shape[-3], shape[-2]
  centre_y = tf.cast(tf.round((height - image_size) / 2), tf.int32)
  centre_x = tf.cast(tf.round((width - image_size) / 2), tf.int32)
  if num_crops == 1:
    corners = [(centre_y, centre_x)]
  elif num_crops == 3:
    end_y, end_x = height - image_size, width - image_size
    wide = width >= height
    corners = [(tf.where(wide, centre_y, 0), tf.where(wide, 0, centre_x)),
               (centre_y, centre_x),
               (tf.where(wide, centre_y, end_y), tf.where(wide, end_x, centre_x))]
  else:
    raise ValueError(f'num_crops must be 1 or 3, got {num_crops}')
  return tf.stack([frames[..., y:y + image_size, x:x + image_size, :]
                   for y, x in corners])


def eval_views(frames, image_size: int, resize_size: int = EVAL_RESIZE,
               num_crops: int = 1):
  """uint8 (num_crops, ..., S, S, 3) from decoded frames (..., H, W, 3):
  short side resized to `resize_size`, then centre (or 3) crops."""
  if resize_size < image_size:
    raise ValueError(f'resize_size {resize_size} is smaller than the crop '
                     f'{image_size}')
  resized = _resize_short_side(tf.cast(frames, tf.float32), resize_size)
  return _to_uint8(_eval_crops(resized, image_size, num_crops))


def make_eval_dataset(dataset, *, num_frames: int, image_size: int,
                      batch_size: int, split: str = 'test',
                      resize_size: int = EVAL_RESIZE, num_clips: int = 1,
                      num_crops: int = 1, process_index: int = 0,
                      process_count: int = 1,
                      data_dir: str | None = None) -> tf.data.Dataset:
  """Every video of this process's part of `split` once, then padding.

  Each video gives num_clips x num_crops views: clips of K frames at evenly
  spread offsets within the K segments (the centre for one clip), each
  resized to short side `resize_size` and cut into 1 (centre) or 3 crops.
  Every process yields the same number of batches,
  ceil(ceil(split size / process_count) / batch_size); rows past this
  process's videos have mask False, label 0 and zero frames.

  Returns:
    A finite tf.data.Dataset of {'video', 'label', 'mask'} batches; 'video'
    is (B, K, S, S, 3), or (B, V, K, S, S, 3) with V = num_clips * num_crops
    views when V > 1 (average the scores over V).
  """
  builder = load_builder(dataset, data_dir)
  source = _shard_source(builder, split, process_index, process_count)
  total = builder.info.splits[split].num_examples
  if total == 0:
    raise DatasetError(f'{builder.info.full_name} split {split!r} is empty.')
  # even_splits gives the first (total % process_count) parts one more video.
  num_batches = math.ceil(math.ceil(total / process_count) / batch_size)
  num_views = num_clips * num_crops
  view_shape = [num_frames, image_size, image_size, 3]
  video_shape = view_shape if num_views == 1 else [num_views] + view_shape

  def clip(index):
    example = _read_example(builder, source, index)
    video = example['video']
    indices = _sampled(
        lambda t: np.concatenate([
            sampling.centre_indices(t, num_frames, c, num_clips)
            for c in range(num_clips)]),
        video, num_frames * num_clips)
    frames = tf.map_fn(
        lambda jpeg: tf.io.decode_jpeg(jpeg, channels=3),
        tf.gather(video, indices),
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    views = eval_views(frames, image_size, resize_size, num_crops)
    # (crops, clips * K, S, S, 3) -> (clips * crops, K, S, S, 3), clip-major.
    views = tf.reshape(views, [num_crops, num_clips] + view_shape)
    views = tf.reshape(tf.transpose(views, [1, 0, 2, 3, 4, 5]),
                       [num_views] + view_shape)
    return {'video': tf.reshape(views, video_shape),
            'label': tf.cast(example['label'], tf.int32),
            'mask': tf.constant(True)}

  def padding(_):
    return {'video': tf.zeros(video_shape, tf.uint8),
            'label': tf.constant(0, tf.int32), 'mask': tf.constant(False)}

  videos = tf.data.Dataset.range(len(source)).map(
      clip, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  pad = tf.data.Dataset.range(num_batches * batch_size - len(source)).map(
      padding)
  return (videos.concatenate(pad)
          .batch(batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))


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
  return eval_views(clip, image_size, resize_size)[0].numpy()
