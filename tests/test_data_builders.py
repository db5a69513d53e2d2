"""ucf101_frames and hmdb51_frames built from small archives as published."""

import collections
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle

from pasnet_jax.data import datasets
from pasnet_jax.data import frames_builder
from pasnet_jax.data import records
from pasnet_jax.errors import DatasetError
from tests import data_helpers

UCF_TRAIN = ['ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi',
             'HandstandPushups/v_HandStandPushups_g08_c01.avi',
             'YoYo/v_YoYo_g10_c02.avi']
UCF_TEST = ['ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi',
            'HandstandPushups/v_HandStandPushups_g01_c01.avi']


def _ucf_manual_dir(root: pathlib.Path, train, test, videos, split_number=1):
  """UCF101.rar (top folder UCF-101/) and the split ZIP, as published."""
  root.mkdir(parents=True, exist_ok=True)
  data_helpers.write_rar4(root / 'UCF101.rar',
                          {f'UCF-101/{p}': data for p, data in videos.items()})
  data_helpers.write_zip(root / 'UCF101TrainTestSplits-RecognitionTask.zip',
                         data_helpers.ucf101_split_files(train, test,
                                                         split_number))
  return root


@pytest.fixture(scope='module')
def ucf101(module_tmp):
  root = module_tmp('ucf101')
  lengths = {p: 3 + i for i, p in enumerate(UCF_TRAIN + UCF_TEST)}
  videos = {p: data_helpers.video_bytes(n, seed=n) for p, n in lengths.items()}
  manual = _ucf_manual_dir(root / 'manual', UCF_TRAIN, UCF_TEST, videos)
  builder = data_helpers.prepare('ucf101_frames/split1', manual, root / 'data')
  return builder, lengths


def test_ucf101_sizes_labels_names_and_frames(ucf101):
  builder, lengths = ucf101
  assert data_helpers.split_sizes(builder)['train'] == 3
  assert data_helpers.split_sizes(builder)['test'] == 2
  assert builder.info.features['label'].names[36] == 'HandstandPushups'
  train = data_helpers.examples(builder, 'train')
  assert sorted(train) == sorted(p[:-4] for p in UCF_TRAIN)
  example = train['HandstandPushups/v_HandStandPushups_g08_c01']
  assert example['label'] == 36
  length = lengths['HandstandPushups/v_HandStandPushups_g08_c01.avi']
  assert example['num_frames'] == length and example['fps'] == 25
  assert example['video'].shape == (length, 256, 341, 3)
  assert data_helpers.frame_marks(example['video']) == list(range(length))
  test = data_helpers.examples(builder, 'test')
  assert {n: int(e['label']) for n, e in test.items()} == {
      'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01': 0,
      'HandstandPushups/v_HandStandPushups_g01_c01': 36}
  report = frames_builder.failure_report_path(builder, 'test')
  assert report.read_text().splitlines()[0] == '# 0 of 2 test videos left out'


def test_records_are_the_frames_in_list_order_as_the_table_says(ucf101):
  builder, lengths = ucf101
  table = records.prepared_dataset(builder).videos['train']
  assert list(table.names) == [p[:-4] for p in UCF_TRAIN]
  assert list(table.num_frames) == [lengths[p] for p in UCF_TRAIN]
  source = builder.as_data_source(split='train')
  stored = [(source[i]['name'].decode(), int(source[i]['frame']),
             int(source[i]['label'])) for i in range(len(source))]
  assert stored == [(name, frame, label) for name, count, label in zip(
      table.names, table.num_frames, table.labels) for frame in range(count)]


def test_frame_keys_keep_the_order_and_spread_over_the_sort_buckets():
  num_videos, buckets = 13320, 1000
  keys = [frames_builder.frame_key(p, f, num_videos)
          for p in (0, 1, 6000, num_videos - 1)
          for f in (0, 1, frames_builder.MAX_FRAMES - 1)]
  assert keys == sorted(set(keys))
  assert 0 <= keys[0] and keys[-1] < 2**128
  spread = [shuffle.get_bucket_number(frames_builder.frame_key(p, 0,
                                                               num_videos),
                                      buckets)
            for p in range(0, num_videos, 100)]
  # About one bucket per 13 videos: no bucket holds much of the split.
  assert max(collections.Counter(spread).values()) <= 1
  assert spread[-1] >= buckets - 10


def test_ucf101_from_unpacked_folders(tmp_path):
  manual = tmp_path / 'manual'
  for path in UCF_TRAIN[:1] + UCF_TEST[:1]:
    file = manual / 'UCF-101' / path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(data_helpers.video_bytes(2))
  for name, data in data_helpers.ucf101_split_files(
      UCF_TRAIN[:1], UCF_TEST[:1], split_number=3).items():
    (manual / name).parent.mkdir(parents=True, exist_ok=True)
    (manual / name).write_bytes(data)
  builder = data_helpers.prepare('ucf101_frames/split3', manual,
                                 tmp_path / 'data')
  assert data_helpers.split_sizes(builder)['train'] == 1
  assert data_helpers.split_sizes(builder)['test'] == 1


def test_failures_over_one_percent_stop_the_build_with_a_report(tmp_path):
  good = data_helpers.video_bytes(3)
  test = UCF_TEST + ['YoYo/v_YoYo_g01_c01.avi']
  videos = {p: good for p in UCF_TRAIN + test}
  videos[UCF_TEST[0]] = b''
  videos[UCF_TEST[1]] = data_helpers.truncated(data_helpers.video_bytes(20))
  manual = _ucf_manual_dir(tmp_path / 'manual', UCF_TRAIN, test, videos)
  with pytest.raises(DatasetError, match=r'2 of the 3 test videos.*'
                     r'failures-2.0.0-test.tsv'):
    data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')
  builder = tfds.builder('ucf101_frames/split1', data_dir=str(tmp_path / 'data'))
  report = frames_builder.failure_report_path(builder, 'test')
  rows = dict(line.split('\t') for line in report.read_text().splitlines()[2:])
  assert rows == {
      'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01': 'the file is empty (0 bytes)',
      'HandstandPushups/v_HandStandPushups_g01_c01':
          rows['HandstandPushups/v_HandStandPushups_g01_c01']}
  assert rows['HandstandPushups/v_HandStandPushups_g01_c01'].startswith(
      'truncated: 3 of the 20 frames')
  # Nothing TFDS would load: no version folder, not prepared.
  assert not builder.is_prepared()
  assert not (report.parent / '2.0.0').exists()


def test_one_percent_of_failures_is_left_out_and_reported(tmp_path):
  # 100 test videos, one missing from the archive and one empty: 2 % fails;
  # with the empty one replaced, 1 % (not more) fails and the build passes.
  good = data_helpers.video_bytes(1)
  test = [f'YoYo/v_YoYo_g{i // 7 + 1:02d}_c{i % 7 + 1:02d}.avi'
          for i in range(100)]
  videos = {p: good for p in UCF_TRAIN[:1] + test[1:]}
  videos[test[1]] = b''
  manual = _ucf_manual_dir(tmp_path / 'manual', UCF_TRAIN[:1], test, videos)
  with pytest.raises(DatasetError, match='2 of the 100 test videos'):
    data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')
  videos[test[1]] = good
  manual = _ucf_manual_dir(tmp_path / 'manual', UCF_TRAIN[:1], test, videos)
  builder = data_helpers.prepare('ucf101_frames/split1', manual,
                                 tmp_path / 'data')
  assert data_helpers.split_sizes(builder)['test'] == 99
  report = frames_builder.failure_report_path(builder, 'test').read_text()
  assert report.splitlines()[2] == (
      f'YoYo/v_YoYo_g01_c01\tnot found in {manual / "UCF101.rar"}')


def test_missing_split_archive_says_what_to_put_where(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  data_helpers.write_rar4(manual / 'UCF101.rar', {})
  with pytest.raises(DatasetError, match=r'put UCF101TrainTestSplits-'
                     r'RecognitionTask.zip \(or its unpacked folder '
                     r'ucfTrainTestlist\) there'):
    data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')


def test_hmdb51_from_nested_rars(tmp_path):
  codes = {'brush_hair': {'a_brush_hair_u_nm_np1_ba_goo_0.avi': 1,
                          'b_brush_hair_u_nm_np1_ba_goo_0.avi': 2,
                          'c_brush_hair_u_nm_np1_ba_goo_0.avi': 0},
           'wave': {'#20_wave_u_cm_np1_fr_goo_0.avi': 1,
                    'd_wave_f_cm_np1_le_med_1.avi': 2}}
  manual = tmp_path / 'manual'
  manual.mkdir()
  class_rars = {
      f'{name}.rar': data_helpers.rar4_bytes({
          f'{name}/{video}': data_helpers.video_bytes(2 + i)
          for i, video in enumerate(videos)})
      for name, videos in codes.items()}
  data_helpers.write_rar4(manual / 'hmdb51_org.rar', class_rars)
  data_helpers.write_rar4(manual / 'test_train_splits.rar',
                          data_helpers.hmdb51_split_files(codes, 2))
  builder = data_helpers.prepare('hmdb51_frames/split2', manual,
                                 tmp_path / 'data')
  train = data_helpers.examples(builder, 'train')
  test = data_helpers.examples(builder, 'test')
  assert {n: int(e['label']) for n, e in train.items()} == {
      'brush_hair/a_brush_hair_u_nm_np1_ba_goo_0': 0,
      'wave/#20_wave_u_cm_np1_fr_goo_0': 50}
  assert sorted(test) == ['brush_hair/b_brush_hair_u_nm_np1_ba_goo_0',
                          'wave/d_wave_f_cm_np1_le_med_1']
  assert test['wave/d_wave_f_cm_np1_le_med_1']['num_frames'] == 3


_KILLED_BUILD = '''
import os, signal, sys
from pasnet_jax.data import frames_builder
from pasnet_jax.data import records
from tests import data_helpers

def killed(*args, **kwargs):
  # As a power cut would: after the train examples were written, mid-build.
  os.kill(os.getpid(), signal.SIGKILL)

if __name__ == '__main__':
  frames_builder._write_report = killed
  data_helpers.prepare('ucf101_frames/split1', sys.argv[1], sys.argv[2])
'''


def test_an_interrupted_build_run_again_finishes(tmp_path):
  videos = {p: data_helpers.video_bytes(2) for p in UCF_TRAIN + UCF_TEST}
  manual = _ucf_manual_dir(tmp_path / 'manual', UCF_TRAIN, UCF_TEST, videos)
  script = tmp_path / 'killed_build.py'
  script.write_text(_KILLED_BUILD)
  root = pathlib.Path(__file__).parents[1]
  result = subprocess.run(
      [sys.executable, str(script), str(manual), str(tmp_path / 'data')],
      cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
      capture_output=True, check=False)
  assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
  config_dir = tmp_path / 'data' / 'ucf101_frames' / 'split1'
  assert [p.name for p in config_dir.iterdir()
          if p.name.startswith('incomplete.')]
  builder = data_helpers.prepare('ucf101_frames/split1', manual,
                                 tmp_path / 'data')
  assert data_helpers.split_sizes(builder)['train'] == 3
  assert data_helpers.split_sizes(builder)['test'] == 2
  assert len(data_helpers.examples(builder, 'train')) == 3


_BUILD = '''
import sys
from tests import data_helpers

if __name__ == '__main__':
  data_helpers.prepare('ucf101_frames/split1', sys.argv[1], sys.argv[2])
'''


def test_a_build_killed_midway_is_never_loaded_and_the_rerun_finishes(
    tmp_path):
  # Long enough to decode that the kill lands while examples are written.
  train = [f'YoYo/v_YoYo_g{i // 7 + 1:02d}_c{i % 7 + 1:02d}.avi'
           for i in range(40)]
  video = data_helpers.video_bytes(60)
  manual = _ucf_manual_dir(tmp_path / 'manual', train, UCF_TEST[:1],
                           {p: video for p in train + UCF_TEST[:1]})
  script = tmp_path / 'build.py'
  script.write_text(_BUILD)
  root = pathlib.Path(__file__).parents[1]
  build = subprocess.Popen(
      [sys.executable, str(script), str(manual), str(tmp_path / 'data')],
      cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      start_new_session=True)
  progress = b''
  done = 0
  # tqdm redraws "train: decoding videos: 25%|..| 10/40" with carriage
  # returns; kill once a few videos are in but most are not.
  while build.poll() is None and done < 3:
    progress += os.read(build.stderr.fileno(), 4096)
    counts = re.findall(rb'train: decoding videos: .*?\| *(\d+)/40', progress)
    done = int(counts[-1]) if counts else 0
  # The build and its decoding workers, as `kill -9` of the job would.
  os.killpg(build.pid, signal.SIGKILL)
  build.wait()
  assert build.returncode == -signal.SIGKILL, progress.decode()[-2000:]
  assert 3 <= done < 40

  config_dir = tmp_path / 'data' / 'ucf101_frames' / 'split1'
  assert [p for p in config_dir.iterdir() if p.name.startswith('incomplete.')]
  assert not (config_dir / '2.0.0').exists()
  assert not tfds.builder('ucf101_frames/split1',
                          data_dir=str(tmp_path / 'data')).is_prepared()
  with pytest.raises(DatasetError, match='is not prepared'):
    datasets.load_builder('ucf101_frames/split1', str(tmp_path / 'data'))

  builder = data_helpers.prepare('ucf101_frames/split1', manual,
                                 tmp_path / 'data')
  assert data_helpers.split_sizes(builder)['train'] == 40
  assert data_helpers.split_sizes(builder)['test'] == 1
  assert sorted(data_helpers.examples(builder, 'train')) == sorted(
      p[:-4] for p in train)
  assert datasets.load_builder('ucf101_frames/split1',
                               str(tmp_path / 'data')).is_prepared()


_UNGUARDED_BUILD = '''
from tests import data_helpers
data_helpers.prepare('ucf101_frames/split1', {manual!r}, {data!r})
print('built')
'''


@pytest.mark.parametrize('source', ['script', 'stdin'])
def test_a_build_from_a_script_without_a_main_guard_or_from_stdin_finishes(
    tmp_path, source):
  """Spawned workers used to re-run such a script (or look for a file named
  <stdin>), die at start and be replaced forever."""
  videos = {p: data_helpers.video_bytes(2) for p in UCF_TRAIN + UCF_TEST}
  manual = _ucf_manual_dir(tmp_path / 'manual', UCF_TRAIN, UCF_TEST, videos)
  code = _UNGUARDED_BUILD.format(manual=str(manual),
                                 data=str(tmp_path / 'data'))
  script = tmp_path / 'unguarded_build.py'
  script.write_text(code)
  root = pathlib.Path(__file__).parents[1]
  command = [sys.executable, str(script)] if source == 'script' else [
      sys.executable, '-']
  result = subprocess.run(
      command, input=code if source == 'stdin' else None, text=True,
      cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
      capture_output=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'built' in result.stdout
  assert 'Traceback' not in result.stderr


def test_a_build_worker_that_dies_ends_the_build_with_one_error():
  with pytest.raises(DatasetError, match='a worker process died'):
    list(frames_builder.map_in_workers(os._exit, [3, 3], 'dying workers'))
