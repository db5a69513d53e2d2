"""The Grain pipeline on a small built dataset."""

import io
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from PIL import Image
import simplejpeg

from pasnet_jax.data import pipeline
from pasnet_jax.data import sampling
from pasnet_jax.errors import DatasetError
from tests import data_helpers

CLASSES = ['ApplyEyeMakeup', 'Archery', 'Biking', 'Diving', 'Fencing',
           'HulaHoop', 'Knitting']
K, SIZE, RESIZE = 4, 64, 72
# Seconds a failing read may take to end; a hang would take forever.
DEADLINE = 120


@pytest.fixture(scope='module')
def builder(module_tmp):
  """Test videos of 7 distinct classes (1 to 8 frames), 6 train videos."""
  root = module_tmp('pipeline')
  train = [f'{c}/v_{c}_g08_c01.avi' for c in CLASSES[:6]]
  test = [f'{c}/v_{c}_g01_c01.avi' for c in CLASSES]
  lengths = dict(zip(train + test, [3] * 6 + [1, 2, 5, 3, 8, 4, 6]))
  manual = root / 'manual'
  manual.mkdir()
  data_helpers.write_rar4(manual / 'UCF101.rar', {
      f'UCF-101/{p}': data_helpers.video_bytes(n, seed=i)
      for i, (p, n) in enumerate(lengths.items())})
  data_helpers.write_zip(manual / 'UCF101TrainTestSplits-RecognitionTask.zip',
                         data_helpers.ucf101_split_files(train, test))
  return data_helpers.prepare('ucf101_frames/split1', manual, root / 'data')


def _labels(name):
  return sorted(data_helpers.ucf101_label(c) for c in name)


def _train(builder, **kwargs):
  args = dict(num_frames=K, image_size=SIZE, batch_size=2, seed=3,
              num_workers=0)
  return pipeline.make_train_dataset(builder, **{**args, **kwargs})


def _take(batches, n):
  return list(itertools.islice(batches, n))


def _eval(builder, **kwargs):
  args = dict(num_frames=K, image_size=SIZE, resize_size=RESIZE, batch_size=7,
              num_workers=0)
  return list(pipeline.make_eval_dataset(builder, **{**args, **kwargs}))


def test_train_batches_and_resuming_from_a_batch_number(builder):
  batches = _take(_train(builder), 5)
  first = batches[0]
  assert first['video'].shape == (2, K, SIZE, SIZE, 3)
  assert first['video'].dtype == np.uint8
  assert first['label'].dtype == np.int32 and set(first) == {'video', 'label'}
  resumed = _take(_train(builder, start_batch=3), 2)
  for expected, got in zip(batches[3:], resumed):
    np.testing.assert_array_equal(expected['video'], got['video'])
    np.testing.assert_array_equal(expected['label'], got['label'])
  other_seed = _take(_train(builder, seed=4), 1)[0]
  assert not np.array_equal(other_seed['video'], first['video'])


def test_worker_processes_give_the_same_stream(builder):
  in_process = _take(_train(builder), 4)
  in_workers = _take(_train(builder, num_workers=2), 4)
  for expected, got in zip(in_process, in_workers):
    np.testing.assert_array_equal(expected['video'], got['video'])
    np.testing.assert_array_equal(expected['label'], got['label'])


def test_each_epoch_is_a_permutation_of_the_process_shard(builder):
  seen = []
  for process in range(2):
    stream = _train(builder, batch_size=1, process_index=process,
                    process_count=2)
    labels = [int(b['label'][0]) for b in _take(stream, 9)]
    # Shards of 3: each epoch shows each of the process's videos once, in a
    # new order (3 epochs in the same order would happen 1 time in 36).
    epochs = [labels[:3], labels[3:6], labels[6:]]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(epochs[2])
    assert len({tuple(e) for e in epochs}) > 1
    seen += labels[:3]
  assert sorted(seen) == _labels(CLASSES[:6])


def test_augmentation_crops_and_flips_all_frames_alike():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
  jpegs = [simplejpeg.encode_jpeg(image)] * K
  clips = [pipeline.augmented_clip(jpegs, 'Video 0', 32,
                                   np.random.default_rng(s))
           for s in range(12)]
  for clip in clips:
    assert clip.shape == (K, 32, 32, 3) and clip.dtype == np.uint8
    for frame in clip[1:]:
      np.testing.assert_array_equal(frame, clip[0])
  # Different generators give different crops and flips.
  assert len({clip.tobytes() for clip in clips}) > 6


def test_augmentation_is_the_decoded_window_resized_then_mirrored():
  jpegs = [simplejpeg.encode_jpeg(frame) for frame in np.random.default_rng(
      1).integers(0, 255, (K, 60, 80, 3), dtype=np.uint8)]
  frames = pipeline.decode_frames(jpegs, 'Video 0')
  flipped = 0
  for seed in range(16):
    clip = pipeline.augmented_clip(jpegs, 'Video 0', 32,
                                   np.random.default_rng(seed))
    # The same draws, in the same order, as augmented_clip makes them.
    rng = np.random.default_rng(seed)
    y, x, h, w = pipeline.multi_scale_crop_window(60, 80, rng)
    expected = np.stack([cv2.resize(f[y:y + h, x:x + w], (32, 32),
                                    interpolation=cv2.INTER_LINEAR)
                         for f in frames])
    if rng.random() < 0.5:
      expected, flipped = expected[:, :, ::-1], flipped + 1
    np.testing.assert_array_equal(clip, expected)
  assert 0 < flipped < 16


def test_frames_decode_as_each_alone_and_mixed_sizes_are_damage():
  rng = np.random.default_rng(2)
  images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
  jpegs = [simplejpeg.encode_jpeg(image) for image in images]
  np.testing.assert_array_equal(
      pipeline.decode_frames(jpegs, 'Record 0'),
      np.stack([simplejpeg.decode_jpeg(j, colorspace='RGB') for j in jpegs]))
  smaller = simplejpeg.encode_jpeg(np.ascontiguousarray(images[0][:40]))
  with pytest.raises(DatasetError, match='Record 7 holds a damaged JPEG'):
    pipeline.decode_frames([jpegs[0], smaller], 'Record 7')
  for damaged in ([jpegs[0], smaller], [jpegs[0], jpegs[1][:30]]):
    with pytest.raises(DatasetError, match='Video 7 holds a damaged JPEG'):
      pipeline.augmented_clip(damaged, 'Video 7', 32,
                              np.random.default_rng(0))


def test_multi_scale_crop_windows_are_ecos():
  rng = np.random.default_rng(0)
  windows = {pipeline.multi_scale_crop_window(256, 340, rng)
             for _ in range(2000)}
  sides = {int(256 * s) for s in pipeline.MULTI_SCALE_CROP_SCALES}
  assert {h for _, _, h, _ in windows} == sides
  for y, x, h, w in windows:
    # Aspect jitter of at most one scale step; corners or the centre.
    assert abs(sorted(sides).index(h) - sorted(sides).index(w)) <= 1
    assert y + h <= 256 and x + w <= 340
    assert y in (0, (256 - h) // 4 * 2, (256 - h) // 4 * 4)
  # 10 side pairs at 5 places, but a full-height crop has 3 distinct places.
  assert len(windows) == 10 * 5 - 2 * 2


def _decoded_frames(builder, name):
  return data_helpers.examples(builder, 'test')[name]['video']


def test_eval_clip_is_the_centre_frames_resized_and_cropped(builder):
  batches = _eval(builder)
  assert len(batches) == 1
  batch = batches[0]
  assert batch['video'].shape == (7, K, SIZE, SIZE, 3)
  row = list(batch['label']).index(data_helpers.ucf101_label('Biking'))
  frames = _decoded_frames(builder, 'Biking/v_Biking_g01_c01')
  assert len(frames) == 5
  expected = pipeline.eval_views(frames[sampling.centre_indices(5, K)], SIZE,
                                 RESIZE)[0]
  # The reference frames were decoded by TFDS, the pipeline's by simplejpeg:
  # their JPEG decoders may round differently by a few levels.
  difference = np.abs(batch['video'][row].astype(int) - expected)
  assert difference.max() <= 8 and difference.mean() < 1


@pytest.mark.parametrize('process_count', [1, 2, 4])
def test_eval_counts_every_video_exactly_once(builder, process_count):
  batches_per_process = []
  labels = []
  for process in range(process_count):
    batches = _eval(builder, batch_size=2, process_index=process,
                    process_count=process_count)
    batches_per_process.append(len(batches))
    for batch in batches:
      assert batch['video'].shape == (2, K, SIZE, SIZE, 3)
      labels += list(batch['label'][batch['mask']])
      assert not batch['video'][~batch['mask']].any()
  # Same number of batches everywhere, so collective steps stay in step.
  assert set(batches_per_process) == {math.ceil(math.ceil(7 / process_count)
                                                / 2)}
  assert sorted(labels) == _labels(CLASSES)


def test_multi_view_eval(builder):
  single = _eval(builder)[0]
  views = _eval(builder, num_crops=3)[0]
  assert views['video'].shape == (7, 3, K, SIZE, SIZE, 3)
  np.testing.assert_array_equal(views['video'][:, 1], single['video'])
  clips = _eval(builder, num_clips=2, num_crops=3)[0]
  assert clips['video'].shape == (7, 6, K, SIZE, SIZE, 3)
  assert not np.array_equal(clips['video'][:, 1], clips['video'][:, 4])


def test_preprocess_for_prediction_matches_eval_views():
  frames = np.random.default_rng(0).integers(0, 255, (9, 30, 40, 3),
                                             dtype=np.uint8)
  clip = pipeline.preprocess_for_prediction(frames, num_frames=K,
                                            image_size=SIZE,
                                            resize_size=RESIZE)
  assert clip.shape == (K, SIZE, SIZE, 3) and clip.dtype == np.uint8
  expected = pipeline.eval_views(frames[[1, 3, 5, 7]], SIZE, RESIZE)[0]
  np.testing.assert_array_equal(clip, expected)
  # Short side 30 -> 72: the long side 40 -> 96, centre crop at x = 16.
  assert expected.shape == (K, SIZE, SIZE, 3)


def test_unprepared_dataset_is_a_dataset_error(tmp_path):
  with pytest.raises(DatasetError, match='not prepared'):
    pipeline.make_eval_dataset('ucf101_frames/split2', data_dir=str(tmp_path),
                               num_frames=K, image_size=SIZE, batch_size=1)
  with pytest.raises(DatasetError, match='Unknown dataset'):
    pipeline.make_eval_dataset('ucf102_frames', data_dir=str(tmp_path),
                               num_frames=K, image_size=SIZE, batch_size=1)


def _raised_within_deadline(read) -> BaseException | None:
  """What `read()` raised, run in a thread that must end by DEADLINE."""
  raised = []

  def run():
    try:
      read()
    except BaseException as e:  # pylint: disable=broad-except
      raised.append(e)

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(DEADLINE)
  assert not thread.is_alive(), f'the read hung for {DEADLINE} s'
  return raised[0] if raised else None


def test_a_killed_worker_ends_the_read_with_a_dataset_error(builder):
  batches = iter(_train(builder, num_workers=1))
  next(batches)
  workers = multiprocessing.active_children()
  assert workers
  for worker in workers:
    os.kill(worker.pid, signal.SIGKILL)
  # Batches already on their way may still come; the endless stream then
  # ends, with the dataset's name.
  error = _raised_within_deadline(lambda: _take(batches, 1000))
  assert isinstance(error, DatasetError), error
  assert "ucf101_frames/split1/2.0.0 split 'train'" in str(error)


@pytest.mark.parametrize('damaged, named', [
    # Zeros over most of the records; the index at the end stays whole, so
    # some of the records a clip reads fail their checksum.
    ((1 / 8, 1 / 2), 'Video '),
    # Over the index too: the file's records cannot be found.
    ((1 / 8, 3 / 4), 'The files of '),
])
def test_a_damaged_record_is_a_dataset_error_naming_it(builder, tmp_path,
                                                       damaged, named):
  data_dir = tmp_path / 'data'
  shutil.copytree(pathlib.Path(builder.data_dir_root), data_dir)
  (path,) = data_dir.glob('ucf101_frames/split1/*/*-test.array_record-*')
  data = bytearray(path.read_bytes())
  start, end = (int(len(data) * f) for f in damaged)
  data[start:end] = bytes(end - start)
  path.write_bytes(bytes(data))
  error = _raised_within_deadline(lambda: _eval(
      'ucf101_frames/split1', data_dir=str(data_dir), num_workers=1))
  assert isinstance(error, DatasetError), error
  assert str(error).startswith(named), error
  assert "ucf101_frames/split1/2.0.0 split 'test'" in str(error)
  assert str(error).endswith('build the dataset again.'), error


@pytest.mark.parametrize('change, message', [
    ('no table', 'holds a record per video'),
    ('one frame more', 'is damaged: it does not list the'),
    ('a column lost', "is damaged (KeyError('fps'))"),
])
def test_a_wrong_video_table_is_one_dataset_error(builder, tmp_path, change,
                                                  message):
  directory = tmp_path / 'data'
  shutil.copytree(pathlib.Path(builder.data_dir), directory)
  path = directory / 'metadata.json'
  metadata = json.loads(path.read_text())
  if change == 'no table':
    del metadata['videos']
  elif change == 'one frame more':
    metadata['videos']['test']['num_frames'][0] += 1
  else:
    del metadata['videos']['test']['fps']
  path.write_text(json.dumps(metadata))
  with pytest.raises(DatasetError) as raised:
    pipeline.make_eval_dataset(directory, num_frames=K, image_size=SIZE,
                               batch_size=2)
  assert message in str(raised.value)
  assert str(directory) in str(raised.value)


def test_a_reading_process_imports_no_tensorflow_or_pyav_and_exits_clean(builder):
  # PyAV decodes videos only while datasets are built and in predict.
  script = f"""
import itertools, sys
import numpy as np
from pasnet_jax import evaluate, train
from pasnet_jax.data import pipeline
data = dict(data_dir={str(builder.data_dir_root)!r}, num_frames={K},
            image_size={SIZE})
next(iter(pipeline.make_train_dataset('ucf101_frames/split1', batch_size=2,
                                      seed=0, num_workers=1, **data)))
assert len(list(pipeline.make_eval_dataset(
    'ucf101_frames/split1', batch_size=4, num_workers=1, **data))) == 2
pipeline.preprocess_for_prediction(np.zeros((5, 80, 80, 3), np.uint8),
                                   num_frames={K}, image_size={SIZE})
print('tensorflow' in sys.modules, 'av' in sys.modules)
"""
  result = subprocess.run([sys.executable, '-c', script], capture_output=True,
                          text=True, timeout=DEADLINE, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ['False', 'False']
  # Every batch's shared memory is unlinked before the process ends, so
  # Python's resource tracker finds none left to warn about.
  assert 'leaked shared_memory' not in result.stderr, result.stderr[-3000:]
