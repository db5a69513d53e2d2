"""Input pipeline benchmark: build time, disk, clips/s, and decoding only K.

Generates UCF-101-like videos (320 x 240, 25 fps, Xvid-like MPEG-4 at about
the archive's bit rate, textured moving content), builds `ucf101_frames`
from them as unpacked folders, then measures:
  * build seconds per 1,000 videos and stored bytes per frame (the start-up
    of the worker processes, once per split whatever its size, is measured
    apart and left out of the per-video figure);
  * training and evaluation clips/s of `pasnet_jax.data.pipeline` for K = 8
    and 16 at 224 x 224;
  * clips/s of reading a clip by decoding only its K sampled JPEG frames
    against decoding all frames of the video and then picking K.
Prints a table and writes the figures as JSON.

  python benchmarks/input.py --out benchmarks/input_results.json
"""

import argparse
import io
import json
import os
import pathlib
import platform
import tempfile
import time

import av
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import pasnet_jax.data  # registers the builders  # pylint: disable=unused-import
from pasnet_jax.data import frames_builder
from pasnet_jax.data import pipeline
from pasnet_jax.data import sampling
from pasnet_jax.data import splits

WIDTH, HEIGHT, FPS = 320, 240, 25


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


def clips_per_second(dataset, batches: int, batch_size: int) -> float:
  iterator = dataset.as_numpy_iterator()
  next(iterator)  # start-up and the first prefetch are not measured
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def _decode_comparison(builder, num_frames: int, image_size: int,
                       decode_all: bool) -> tf.data.Dataset:
  """Clips read by decoding K sampled frames, or all frames then K."""
  source = builder.as_data_source(
      split='train', deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)

  def clip(index):
    record = tf.numpy_function(lambda i: source[int(i)], [index], tf.string)
    example = builder.info.features.deserialize_example(
        tf.reshape(record, []), decoders={'video': tfds.decode.SkipDecoding()})
    jpegs = example['video']
    indices = tf.numpy_function(
        lambda t: sampling.centre_indices(int(t), num_frames),
        [tf.shape(jpegs, out_type=tf.int64)[0]], tf.int64)
    indices.set_shape([num_frames])
    decode = lambda j: tf.io.decode_jpeg(j, channels=3)
    signature = tf.TensorSpec([None, None, 3], tf.uint8)
    if decode_all:
      frames = tf.map_fn(decode, jpegs, fn_output_signature=signature)
      frames = tf.gather(frames, indices)
    else:
      frames = tf.map_fn(decode, tf.gather(jpegs, indices),
                         fn_output_signature=signature)
    return tf.cast(tf.image.resize(frames, [image_size, image_size]), tf.uint8)

  return (tf.data.Dataset.range(len(source)).repeat()
          .map(clip, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(8).prefetch(tf.data.AUTOTUNE))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--videos', type=int, default=40)
  parser.add_argument('--frames', type=int, default=175,
                      help='frames per video (UCF-101 averages 7.2 s at 25 fps)')
  parser.add_argument('--batches', type=int, default=30)
  parser.add_argument('--out', default='benchmarks/input_results.json')
  args = parser.parse_args()
  results = {'machine': f'{platform.processor() or platform.machine()}, '
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
    for k in (8, 16):
      train = pipeline.make_train_dataset(
          builder, num_frames=k, image_size=224, batch_size=batch, seed=0)
      evaluation = pipeline.make_eval_dataset(
          builder, split='train', num_frames=k, image_size=224,
          batch_size=batch).repeat()
      results[f'train_clips_per_s_k{k}'] = clips_per_second(
          train, args.batches, batch)
      results[f'eval_clips_per_s_k{k}'] = clips_per_second(
          evaluation, args.batches, batch)
      only_k = clips_per_second(_decode_comparison(builder, k, 224, False),
                                args.batches, batch)
      all_frames = clips_per_second(_decode_comparison(builder, k, 224, True),
                                    max(2, args.batches // 4), batch)
      results[f'decode_k_clips_per_s_k{k}'] = only_k
      results[f'decode_all_clips_per_s_k{k}'] = all_frames
      results[f'decode_k_speedup_k{k}'] = only_k / all_frames

  print(f'{results["videos"]} videos x {results["frames_per_video"]} frames, '
        f'320 x 240, {results["machine"]}')
  print(f'build: {results["build_seconds"]:.0f} s, of which worker start-up '
        f'{results["worker_startup_seconds_per_split"]:.0f} s per split; '
        f'{results["build_seconds_per_1000_videos"] / 60:.1f} min per 1,000 '
        f'videos; {results["stored_bytes_per_frame"] / 1e3:.1f} kB per stored '
        f'frame ({results["source_bytes_per_video"] / 1e3:.0f} kB per source '
        'video)')
  print(f'{"K":>3} {"train clips/s":>14} {"eval clips/s":>13} '
        f'{"decode K":>9} {"decode all":>11} {"speedup":>8}')
  for k in (8, 16):
    print(f'{k:>3} {results[f"train_clips_per_s_k{k}"]:>14.1f} '
          f'{results[f"eval_clips_per_s_k{k}"]:>13.1f} '
          f'{results[f"decode_k_clips_per_s_k{k}"]:>9.1f} '
          f'{results[f"decode_all_clips_per_s_k{k}"]:>11.1f} '
          f'{results[f"decode_k_speedup_k{k}"]:>7.1f}x')
  pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
  main()
