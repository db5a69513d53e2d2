"""The builders through the `tfds build` command line, as the README shows it."""

import os
import subprocess
import sys

import tensorflow_datasets as tfds

import pasnet_jax.data  # registers the builders  # pylint: disable=unused-import
from tests import data_helpers

TRAIN = ['ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi',
         'HandstandPushups/v_HandStandPushups_g08_c01.avi']
TEST = ['YoYo/v_YoYo_g01_c01.avi']


def test_tfds_build_reads_the_published_archives(tmp_path):
  manual, data = tmp_path / 'manual', tmp_path / 'data'
  manual.mkdir()
  lengths = {path: 3 + i for i, path in enumerate(TRAIN + TEST)}
  data_helpers.write_rar4(manual / 'UCF101.rar', {
      f'UCF-101/{path}': data_helpers.video_bytes(length, seed=length)
      for path, length in lengths.items()})
  data_helpers.write_zip(manual / 'UCF101TrainTestSplits-RecognitionTask.zip',
                         data_helpers.ucf101_split_files(TRAIN, TEST))

  tfds_command = os.path.join(os.path.dirname(sys.executable), 'tfds')
  build = subprocess.run(
      [tfds_command, 'build', 'ucf101_frames', '--config', 'split1',
       '--imports', 'pasnet_jax.data', '--data_dir', str(data),
       '--manual_dir', str(manual)],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert build.returncode == 0, build.stderr[-3000:]

  builder = tfds.builder('ucf101_frames/split1', data_dir=str(data))
  assert builder.is_prepared()
  built = {split: data_helpers.examples(builder, split)
           for split in ('train', 'test')}
  assert sorted(built['train']) == sorted(p[:-len('.avi')] for p in TRAIN)
  assert sorted(built['test']) == [TEST[0][:-len('.avi')]]
  yoyo = built['test'][TEST[0][:-len('.avi')]]
  assert yoyo['num_frames'] == lengths[TEST[0]]
  assert builder.info.features['label'].int2str(yoyo['label']) == 'YoYo'
