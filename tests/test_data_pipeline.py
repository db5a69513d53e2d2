"""The tf.data pipeline on a small built dataset."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pasnet_jax.data import pipeline
from pasnet_jax.data import sampling
from pasnet_jax.errors import DatasetError
from tests import data_helpers

CLASSES = ['ApplyEyeMakeup', 'Archery', 'Biking', 'Diving', 'Fencing',
           'HulaHoop', 'Knitting']
K, SIZE, RESIZE = 4, 64, 72


@pytest.fixture(scope='module')
def builder(tmp_path_factory):
  """Test videos of 7 distinct classes (1 to 8 frames), 6 train videos."""
  root = tmp_path_factory.mktemp('pipeline')
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
  args = dict(num_frames=K, image_size=SIZE, batch_size=2, seed=3)
  return pipeline.make_train_dataset(builder, **{**args, **kwargs})


def test_train_batches_and_resuming_from_a_batch_number(builder):
  batches = list(_train(builder).take(5).as_numpy_iterator())
  first = batches[0]
  assert first['video'].shape == (2, K, SIZE, SIZE, 3)
  assert first['video'].dtype == np.uint8
  assert first['label'].dtype == np.int32 and first['mask'].all()
  resumed = list(_train(builder, start_batch=3).take(2).as_numpy_iterator())
  for expected, got in zip(batches[3:], resumed):
    np.testing.assert_array_equal(expected['video'], got['video'])
    np.testing.assert_array_equal(expected['label'], got['label'])
  other_seed = next(_train(builder, seed=4).as_numpy_iterator())
  assert not np.array_equal(other_seed['video'], first['video'])


def test_each_epoch_is_a_permutation_of_the_process_shard(builder):
  seen = []
  for process in range(2):
    stream = _train(builder, batch_size=1, process_index=process,
                    process_count=2).take(6).as_numpy_iterator()
    labels = [int(b['label'][0]) for b in stream]
    # Shards of 3: each epoch shows each of the process's videos once.
    assert sorted(labels[:3]) == sorted(labels[3:])
    seen += labels[:3]
  assert sorted(seen) == _labels(CLASSES[:6])


def _jpeg(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def test_augmentation_crops_and_flips_all_frames_alike():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
  jpegs = tf.constant([_jpeg(image)] * K)
  clips = [pipeline.augment_clip(jpegs, 32, tf.constant([s, 0], tf.int64))
           .numpy() for s in range(12)]
  for clip in clips:
    assert clip.shape == (K, 32, 32, 3)
    for frame in clip[1:]:
      np.testing.assert_array_equal(frame, clip[0])
  # Different seeds give different crops and flips.
  assert len({clip.tobytes() for clip in clips}) > 6


def _decoded_frames(builder, name):
  return data_helpers.examples(builder, 'test')[name]['video']


def test_eval_clip_is_the_centre_frames_resized_and_cropped(builder):
  batches = list(pipeline.make_eval_dataset(
      builder, num_frames=K, image_size=SIZE, resize_size=RESIZE,
      batch_size=7).as_numpy_iterator())
  assert len(batches) == 1
  batch = batches[0]
  assert batch['video'].shape == (7, K, SIZE, SIZE, 3)
  row = list(batch['label']).index(data_helpers.ucf101_label('Biking'))
  frames = _decoded_frames(builder, 'Biking/v_Biking_g01_c01')
  assert len(frames) == 5
  expected = pipeline.eval_views(frames[sampling.centre_indices(5, K)], SIZE,
                                 RESIZE)[0].numpy()
  # The reference frames were decoded by PIL, the pipeline's by TensorFlow:
  # their JPEG decoders round differently by a few levels.
  difference = np.abs(batch['video'][row].astype(int) - expected)
  assert difference.max() <= 8 and difference.mean() < 1


@pytest.mark.parametrize('process_count', [1, 2, 4])
def test_eval_counts_every_video_exactly_once(builder, process_count):
  batches_per_process = []
  labels = []
  for process in range(process_count):
    batches = list(pipeline.make_eval_dataset(
        builder, num_frames=K, image_size=SIZE, resize_size=RESIZE,
        batch_size=2, process_index=process,
        process_count=process_count).as_numpy_iterator())
    batches_per_process.append(len(batches))
    for batch in batches:
      assert batch['video'].shape == (2, K, SIZE, SIZE, 3)
      labels += list(batch['label'][batch['mask']])
      assert not batch['video'][~batch['mask']].any()
  # Same number of batches everywhere, so collective steps stay in step.
  assert len(set(batches_per_process)) == 1
  assert sorted(labels) == _labels(CLASSES)


def test_multi_view_eval(builder):
  single = next(pipeline.make_eval_dataset(
      builder, num_frames=K, image_size=SIZE, resize_size=RESIZE,
      batch_size=7).as_numpy_iterator())
  views = next(pipeline.make_eval_dataset(
      builder, num_frames=K, image_size=SIZE, resize_size=RESIZE,
      batch_size=7, num_crops=3).as_numpy_iterator())
  assert views['video'].shape == (7, 3, K, SIZE, SIZE, 3)
  np.testing.assert_array_equal(views['video'][:, 1], single['video'])
  clips = next(pipeline.make_eval_dataset(
      builder, num_frames=K, image_size=SIZE, resize_size=RESIZE,
      batch_size=7, num_clips=2, num_crops=3).as_numpy_iterator())
  assert clips['video'].shape == (7, 6, K, SIZE, SIZE, 3)


def test_preprocess_for_prediction_matches_eval_views():
  frames = np.random.default_rng(0).integers(0, 255, (9, 30, 40, 3),
                                             dtype=np.uint8)
  clip = pipeline.preprocess_for_prediction(frames, num_frames=K,
                                            image_size=SIZE,
                                            resize_size=RESIZE)
  assert clip.shape == (K, SIZE, SIZE, 3) and clip.dtype == np.uint8
  expected = pipeline.eval_views(frames[[1, 3, 5, 7]], SIZE, RESIZE)[0]
  np.testing.assert_array_equal(clip, expected)


def test_unprepared_dataset_is_a_dataset_error(tmp_path):
  with pytest.raises(DatasetError, match='not prepared'):
    pipeline.make_eval_dataset('ucf101_frames/split2', data_dir=str(tmp_path),
                               num_frames=K, image_size=SIZE, batch_size=1)
