"""Odd and bad input through the builders, the pipeline and `predict`.

Odd videos (one frame, fewer frames than K, odd sizes, grayscale, huge
frames) are used; bad ones (empty, truncated, not a video) are reported with
the file's name; bad dataset directories stop the build with one
DatasetError that names the file and says what to do. The command lines turn
these into one `error:` line and exit status 2, without a traceback.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pasnet_jax import cli
from pasnet_jax import errors
from pasnet_jax import inference
from pasnet_jax import predict
from pasnet_jax.data import frames_builder
from pasnet_jax.data import pipeline
from pasnet_jax.data import records
from pasnet_jax.data.video import decode_video
from tests import data_helpers
from tests import run_helpers

ROOT = pathlib.Path(__file__).parents[1]
GOOD_TRAIN = 'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi'
# Listed as .avi as the split files do; the folder key ignores the suffix.
ODD = {
    'YoYo/v_YoYo_g01_c01.avi': ('one frame', 1, (24, 32)),
    'YoYo/v_YoYo_g01_c02.avi': ('two frames, fewer than K', 2, (24, 32)),
    'YoYo/v_YoYo_g01_c03.avi': ('33 x 17', 3, (17, 33)),
    'YoYo/v_YoYo_g01_c04.avi': ('grayscale', 3, (16, 20)),
    'YoYo/v_YoYo_g01_c05.avi': ('4000 x 3000', 2, (3000, 4000)),
}


def odd_video_files() -> dict[str, tuple[str, bytes]]:
  """{listed name: (file name in the archive, bytes)}."""
  files = {}
  for name, (what, frames, (height, width)) in ODD.items():
    if what == 'grayscale':
      files[name] = (name[:-4] + '.mkv',
                     run_helpers.gray_video_bytes(frames, width, height))
    else:
      files[name] = (name, data_helpers.video_bytes(frames, width, height))
  return files


def short_side_shape(height, width, short_side=256):
  scale = short_side / min(height, width)
  return round(height * scale), round(width * scale)


def run_python(*args, timeout=300):
  return subprocess.run(
      [sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
      text=True, timeout=timeout, check=False,
      env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2'))


def error_lines(stderr: str) -> list[str]:
  assert 'Traceback' not in stderr, stderr[-3000:]
  return [line for line in stderr.splitlines() if line.startswith('error:')]


def ucf_manual_dir(root: pathlib.Path, train, test, videos,
                   split_files=None) -> pathlib.Path:
  """UCF101.rar and the split ZIP; `videos` maps archive names to bytes."""
  root.mkdir(parents=True, exist_ok=True)
  data_helpers.write_rar4(root / 'UCF101.rar', {
      f'UCF-101/{name}': data for name, data in videos.items()})
  data_helpers.write_zip(
      root / 'UCF101TrainTestSplits-RecognitionTask.zip',
      split_files or data_helpers.ucf101_split_files(train, test))
  return root


# ------------------------------------------------------------ odd videos


@pytest.fixture(scope='module')
def odd_dataset(module_tmp):
  root = module_tmp('odd')
  videos = {GOOD_TRAIN: data_helpers.video_bytes(3)}
  videos.update(dict(odd_video_files().values()))
  manual = ucf_manual_dir(root / 'manual', [GOOD_TRAIN], list(ODD), videos)
  return data_helpers.prepare('ucf101_frames/split1', manual, root / 'data')


def test_builder_keeps_odd_videos_at_short_side_256(odd_dataset):
  assert data_helpers.split_sizes(odd_dataset)['test'] == len(ODD)
  report = frames_builder.failure_report_path(odd_dataset, 'test')
  assert report.read_text().splitlines()[0] == (
      f'# 0 of {len(ODD)} test videos left out')
  test = data_helpers.examples(odd_dataset, 'test')
  for name, (what, frames, (height, width)) in ODD.items():
    example = test[name[:-4]]
    assert example['num_frames'] == frames, what
    assert example['video'].shape == (
        frames, *short_side_shape(height, width), 3), what
  gray = test['YoYo/v_YoYo_g01_c04']['video'].astype(int)
  # Converted to RGB: three equal channels (up to JPEG rounding), each frame
  # the grey level it was drawn with.
  assert np.abs(gray - gray[..., :1]).max() <= 2
  assert [round(frame.mean()) for frame in gray] == [20, 30, 40]


def assert_repeated_in_order(clip, what):
  """A K=4 clip of a 1- or 2-frame video: frames 0000 or 0011."""
  np.testing.assert_array_equal(clip[0], clip[1])
  np.testing.assert_array_equal(clip[2], clip[3])
  assert np.array_equal(clip[1], clip[2]) == (what == 'one frame')


def test_eval_pipeline_repeats_frames_of_short_videos(odd_dataset):
  batch = next(iter(pipeline.make_eval_dataset(
      odd_dataset, num_frames=4, image_size=32, resize_size=36,
      batch_size=len(ODD), num_workers=0)))
  assert batch['video'].shape == (len(ODD), 4, 32, 32, 3)
  names = list(records.prepared_dataset(odd_dataset).videos['test'].names)
  for name, (what, frames, _) in ODD.items():
    if frames < 3:
      assert_repeated_in_order(batch['video'][names.index(name[:-4])], what)


@pytest.fixture(scope='module')
def trained_run(module_tmp):
  return run_helpers.write_trained_run(module_tmp('run') / 'run')


@pytest.fixture(scope='module')
def video_files(module_tmp):
  """{what: path} of odd and bad video files."""
  directory = module_tmp('videos')
  paths = {}
  for name, (file_name, data) in odd_video_files().items():
    path = directory / pathlib.Path(file_name).name
    path.write_bytes(data)
    paths[ODD[name][0]] = path
  bad = {
      'empty': (b'', 'the file is empty'),
      'truncated': (data_helpers.truncated(data_helpers.video_bytes(20)),
                    'truncated: 3 of the 20 frames'),
      'not a video': (b'not a video at all' * 10, 'not a readable video'),
  }
  for what, (data, _) in bad.items():
    path = directory / f'{what.replace(" ", "_")}.avi'
    path.write_bytes(data)
    paths[what] = path
  paths['missing'] = directory / 'absent.avi'
  paths['a directory'] = directory
  return paths, {what: reason for what, (_, reason) in bad.items()}


def test_clip_from_file_repeats_frames_in_order_when_short(video_files):
  paths, _ = video_files
  for what in ('one frame', 'two frames, fewer than K'):
    clip = inference.clip_from_file(str(paths[what]), num_frames=4,
                                    image_size=32, short_side=36)
    assert clip.shape == (4, 32, 32, 3)
    assert_repeated_in_order(clip, what)


def test_predict_ranks_odd_videos_and_names_bad_ones(trained_run, video_files):
  paths, reasons = video_files
  trained = inference.load_trained(str(trained_run))
  with cli.clean_errors():
    results = {path: (ranking, error) for path, ranking, error in
               predict.predict_files(trained, [str(p) for p in paths.values()],
                                     top=3)}
  for what, path in paths.items():
    ranking, error = results[str(path)]
    if what in (ODD[name][0] for name in ODD):
      assert error is None and len(ranking) == 3, (what, error)
      assert sorted(name for name, _ in ranking) == sorted(
          run_helpers.CLASS_NAMES)
    else:
      assert ranking is None and str(path) in error, (what, error)
      assert '\n' not in error
  for what, reason in reasons.items():
    assert reason in results[str(paths[what])][1]


def test_predict_command_line_one_error_line_per_bad_file(trained_run,
                                                          video_files):
  paths, _ = video_files
  bad = [paths['empty'], paths['not a video'], paths['missing']]
  result = run_python('-m', 'pasnet_jax.predict', f'--workdir={trained_run}',
                      '--top=2', paths['one frame'], *bad)
  assert result.returncode == errors.BAD_INPUT, result.stderr[-3000:]
  assert result.stdout.splitlines()[0] == str(paths['one frame'])
  assert len(result.stdout.splitlines()) == 3
  lines = error_lines(result.stderr)
  assert len(lines) == len(bad)
  for line, path in zip(lines, bad):
    assert str(path) in line


def test_builder_reports_bad_videos_with_the_reason(tmp_path, video_files):
  paths, reasons = video_files
  test = {f'YoYo/v_YoYo_g02_c0{i + 1}.avi': what
          for i, what in enumerate(reasons)}
  videos = {GOOD_TRAIN: data_helpers.video_bytes(2),
            **{name: paths[what].read_bytes() for name, what in test.items()}}
  manual = ucf_manual_dir(tmp_path / 'manual', [GOOD_TRAIN], list(test),
                          videos)
  with pytest.raises(errors.DatasetError, match='3 of the 3 test videos'):
    data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')
  builder = tfds.builder('ucf101_frames/split1', data_dir=str(tmp_path / 'data'))
  report = frames_builder.failure_report_path(builder, 'test').read_text()
  rows = dict(line.split('\t') for line in report.splitlines()[2:])
  assert sorted(rows) == sorted(name[:-4] for name in test)
  for name, what in test.items():
    assert rows[name[:-4]].startswith(reasons[what]), rows[name[:-4]]
  assert not builder.is_prepared()


# ------------------------------------------------------------ bad datasets


@pytest.fixture(scope='module')
def good_inputs():
  videos = {GOOD_TRAIN: data_helpers.video_bytes(2),
            'YoYo/v_YoYo_g01_c01.avi': data_helpers.video_bytes(2)}
  return videos, [GOOD_TRAIN], ['YoYo/v_YoYo_g01_c01.avi']


def test_missing_or_empty_manual_dir_says_what_to_put_there(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  for manual in (tmp_path / 'absent', empty):
    with pytest.raises(errors.DatasetError) as error:
      data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')
    message = str(error.value)
    assert message == (
        f'Manual directory {manual} does not exist or is empty: put '
        'UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip there, or '
        'name the directory that holds them (--config.dataset.manual_dir, or '
        '--manual_dir of tfds build), and build again.')


def test_missing_split_file_names_it_and_the_archive(tmp_path, good_inputs):
  videos, train, test = good_inputs
  split_files = data_helpers.ucf101_split_files(train, test)
  del split_files['ucfTrainTestlist/testlist01.txt']
  manual = ucf_manual_dir(tmp_path / 'manual', train, test, videos,
                          split_files)
  zip_path = manual / 'UCF101TrainTestSplits-RecognitionTask.zip'
  with pytest.raises(errors.DatasetError, match=(
      f'Split file testlist01.txt is missing from {zip_path}. Use the split '
      'archive as published.')):
    data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')


def test_unknown_class_in_a_split_list_names_the_line(tmp_path, good_inputs):
  videos, train, test = good_inputs
  split_files = data_helpers.ucf101_split_files(train, test)
  split_files['ucfTrainTestlist/testlist01.txt'] += b'Juggling/v_J_g01.avi\r\n'
  manual = ucf_manual_dir(tmp_path / 'manual', train, test, videos,
                          split_files)
  with pytest.raises(errors.DatasetError, match=(
      'testlist01.txt line 2: expected "<Class>/<video>.avi" with an official '
      "class name, got 'Juggling/v_J_g01.avi'")):
    data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')


def test_listed_video_missing_from_the_archive_is_reported(tmp_path,
                                                           good_inputs):
  videos, train, test = good_inputs
  missing = 'YoYo/v_YoYo_g02_c01.avi'
  manual = ucf_manual_dir(tmp_path / 'manual', train, test + [missing], videos)
  with pytest.raises(errors.DatasetError, match='1 of the 2 test videos') as error:
    data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')
  report = pathlib.Path(str(error.value).split(' in ')[1].split('. ')[0])
  assert report.read_text().splitlines()[2] == (
      f'YoYo/v_YoYo_g02_c01\tnot found in {manual / "UCF101.rar"}')
  builder = tfds.builder('ucf101_frames/split1', data_dir=str(tmp_path / 'data'))
  assert not builder.is_prepared()


@pytest.mark.parametrize('damage', ['truncated', 'garbage'])
def test_corrupt_archive_names_it(tmp_path, good_inputs, damage):
  videos, train, test = good_inputs
  manual = ucf_manual_dir(tmp_path / 'manual', train, test, videos)
  rar = manual / 'UCF101.rar'
  data = rar.read_bytes()
  rar.write_bytes(data[:len(data) // 2] if damage == 'truncated' else
                  b'Rar!\x1a\x07\x00' + bytes(range(256)) * 8)
  with pytest.raises(errors.DatasetError, match=f'{rar} is (damaged or )?incomplete'):
    data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')


def test_training_command_line_with_a_bad_manual_dir(tmp_path):
  manual = tmp_path / 'no_such_dir'
  result = run_python(
      '-m', 'pasnet_jax.main', '--config=configs/ucf101.py',
      f'--workdir={tmp_path / "run"}',
      f'--config.dataset.manual_dir={manual}',
      f'--config.dataset.data_dir={tmp_path / "data"}')
  assert result.returncode == errors.BAD_INPUT, result.stderr[-3000:]
  assert error_lines(result.stderr) == [(
      f'error: Manual directory {manual} does not exist or is empty: put '
      'UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip there, or '
      'name the directory that holds them (--config.dataset.manual_dir, or '
      '--manual_dir of tfds build), and build again.')]


_PEAK_MEMORY = '''
import resource, sys
from pasnet_jax.data import video

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
frames, _ = video.decode_video(sys.argv[1], short_side=256)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(frames.shape, (after - before) * 1024)
'''


def test_huge_frames_are_resized_one_at_a_time(tmp_path):
  num_frames, height, width = 8, 3000, 4000
  path = tmp_path / 'huge.avi'
  path.write_bytes(data_helpers.video_bytes(num_frames, width, height))
  result = run_python('-c', _PEAK_MEMORY, path)
  assert result.returncode == 0, result.stderr[-3000:]
  shape, peak_growth = result.stdout.rsplit(' ', 1)
  assert shape == '(8, 256, 341, 3)'
  # Half of what the frames take at full size: they never all were.
  assert int(peak_growth) < num_frames * height * width * 3 // 2


@pytest.mark.parametrize('num_frames', [4, 16])
def test_clip_from_file_is_the_eval_clip_of_all_frames(tmp_path, num_frames):
  path = tmp_path / 'clip.avi'
  path.write_bytes(data_helpers.video_bytes(12, width=48, height=40))
  frames, _ = decode_video(path, short_side=36)
  expected = pipeline.preprocess_for_prediction(
      frames, num_frames=num_frames, image_size=32, resize_size=36)
  clip = inference.clip_from_file(str(path), num_frames=num_frames,
                                  image_size=32, short_side=36)
  np.testing.assert_array_equal(clip, expected)


_CLIP_PEAK_MEMORY = '''
import resource, sys
from pasnet_jax import inference

def clip(path):
  return inference.clip_from_file(path, num_frames=4, image_size=224,
                                  short_side=256)

clip(sys.argv[2])  # TensorFlow's first run takes memory of its own.
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
shape = clip(sys.argv[1]).shape
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(shape, (after - before) * 1024)
'''


def test_predict_memory_does_not_grow_with_the_video_length(tmp_path):
  num_frames = 600
  path = tmp_path / 'long.avi'
  path.write_bytes(data_helpers.video_bytes(num_frames))
  short = tmp_path / 'short.avi'
  short.write_bytes(data_helpers.video_bytes(2))
  result = run_python('-c', _CLIP_PEAK_MEMORY, path, short)
  assert result.returncode == 0, result.stderr[-3000:]
  shape, peak_growth = result.stdout.splitlines()[-1].rsplit(' ', 1)
  assert shape == '(4, 224, 224, 3)'
  # A tenth of what all frames at short side 256 would take.
  assert int(peak_growth) < num_frames * 256 * 341 * 3 // 10
