"""Seeded random damage to a video and to checkpoints, given to the code the
builders, `predict` and the converters run.

Each case is a copy of a small valid file cut short, with bytes flipped, or
with a chunk of another file spliced in. Whatever the damage, the code must
either use the file or raise the project's error for it (which the command
lines print as one line), within a deadline, and write nothing where it
should not: no converter output, no loadable dataset, no change to the
input. A handful of cases run through the real command lines to show that
no traceback reaches the user. Set FUZZ_CASES to run more of each.
"""

import contextlib
import faulthandler
import hashlib
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
import torch

from convert import eco
from convert import openpose
from convert import torch_io
from pasnet_jax import checkpoints
from pasnet_jax import errors
from pasnet_jax import inference
from pasnet_jax.data import archives
from pasnet_jax.data import frames_builder
from pasnet_jax.data import splits
from tests import data_helpers
from tests import run_helpers

ROOT = pathlib.Path(__file__).parents[1]
SCALE = int(os.environ.get('FUZZ_CASES', '1'))
# Decoding a 16 x 16 video or loading a tiny checkpoint takes milliseconds;
# a case that takes seconds is a hang.
DEADLINE_S = 10


class Hang(Exception):
  pass


@contextlib.contextmanager
def deadline(what: str, seconds: int = DEADLINE_S):
  """Fails a case that runs past `seconds`.

  SIGALRM interrupts Python code; a hang inside C code that never returns to
  Python is caught by faulthandler instead, which dumps the stacks and ends
  the test run.
  """
  def timed_out(signum, frame):
    raise Hang(f'{what} ran past {seconds} s')

  previous = signal.signal(signal.SIGALRM, timed_out)
  signal.alarm(seconds)
  faulthandler.dump_traceback_later(4 * seconds, exit=True,
                                    file=sys.__stderr__)
  try:
    yield
  finally:
    faulthandler.cancel_dump_traceback_later()
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def corrupt(rng: np.random.Generator, data: bytes, other: bytes
            ) -> tuple[str, bytes]:
  """(kind, damaged copy of `data`): truncated, bytes flipped, or spliced."""
  kind = ('truncate', 'flip', 'splice')[rng.integers(3)]
  damaged = bytearray(data)
  if kind == 'truncate':
    return kind, bytes(damaged[:rng.integers(len(damaged))])
  if kind == 'flip':
    for _ in range(rng.integers(1, 20)):
      damaged[rng.integers(len(damaged))] ^= 1 << rng.integers(8)
    return kind, bytes(damaged)
  start = rng.integers(len(damaged))
  length = rng.integers(1, 200)
  source = rng.integers(max(1, len(other) - length))
  spliced = damaged[:start] + other[source:source + length]
  return kind, bytes(spliced + damaged[start + length:])


def tree_digest(directory: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes())
          .hexdigest() for p in sorted(directory.rglob('*')) if p.is_file()}


def one_line(message: str, path) -> None:
  assert '\n' not in message and str(path) in message, message


def run_python(*args, timeout=300):
  return subprocess.run(
      [sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
      text=True, timeout=timeout, check=False,
      env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL='2'))


# ---------------------------------------------------------------- videos


VIDEO = data_helpers.video_bytes(8, width=16, height=16)
OTHER_VIDEO = data_helpers.video_bytes(5, width=24, height=16, seed=3)


def damaged_videos(seed: int, count: int):
  rng = np.random.default_rng(seed)
  return [corrupt(rng, VIDEO, OTHER_VIDEO) for _ in range(count)]


def builder_verdict(path: pathlib.Path):
  """What the builders' worker makes of a file: None if used, else why."""
  task = frames_builder._VideoTask(  # pylint: disable=protected-access
      archives.VideoRef(str(path)), splits.ListedVideo('YoYo/v_YoYo', 100), 0)
  _, result = frames_builder._encode_video(task)  # pylint: disable=protected-access
  if isinstance(result, str):
    assert result and '\n' not in result, result
    return result
  assert result['num_frames'] == len(result['video']) >= 1
  return None


def predict_verdict(path: pathlib.Path):
  """What `predict` makes of a file: None if used, else its message."""
  try:
    clip = inference.clip_from_file(
        str(path), num_frames=4, image_size=run_helpers.IMAGE_SIZE,
        short_side=run_helpers.SHORT_SIDE)
  except errors.DatasetError as error:
    one_line(str(error), path)
    return str(error)
  assert clip.shape == (4, run_helpers.IMAGE_SIZE, run_helpers.IMAGE_SIZE, 3)
  return None


@pytest.mark.parametrize('seed, count', [
    (0, 200 * SCALE), pytest.param(1, 2000, marks=pytest.mark.slow)])
def test_damaged_videos_are_used_or_reported(tmp_path, seed, count):
  kinds = {}
  path = tmp_path / 'damaged.avi'
  for case, (kind, data) in enumerate(damaged_videos(seed, count)):
    path.write_bytes(data)
    with deadline(f'video case {case} ({kind})'):
      built = builder_verdict(path)
      predicted = predict_verdict(path)
    # Both decode with the same rules, at their own sizes.
    assert (built is None) == (predicted is None), (case, built, predicted)
    kinds.setdefault(kind, set()).add(built is None)
    assert path.read_bytes() == data and os.listdir(tmp_path) == [path.name]
  # The damage is varied enough to hit both outcomes of every kind.
  assert kinds == {'truncate': {True, False}, 'flip': {True, False},
                   'splice': {True, False}}


def test_build_of_damaged_videos_reports_each_and_loads_nothing(tmp_path):
  damaged = damaged_videos(seed=2, count=8)
  test = [f'YoYo/v_YoYo_g01_c{i + 1:02d}.avi' for i in range(len(damaged))]
  train = ['ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi']
  videos = {train[0]: VIDEO, **{name: data for name, (_, data)
                                in zip(test, damaged)}}
  expected = {}
  for name, data in videos.items():
    path = tmp_path / 'probe.avi'
    path.write_bytes(data)
    reason = builder_verdict(path)
    if reason:
      expected[name[:-4]] = reason
  assert 0 < len(expected) < len(damaged)
  manual = tmp_path / 'manual'
  manual.mkdir()
  data_helpers.write_rar4(manual / 'UCF101.rar', {
      f'UCF-101/{name}': data for name, data in videos.items()})
  data_helpers.write_zip(manual / 'UCF101TrainTestSplits-RecognitionTask.zip',
                         data_helpers.ucf101_split_files(train, test))
  with pytest.raises(errors.DatasetError, match=f'{len(expected)} of the '
                     f'{len(test)} test videos'):
    data_helpers.prepare('ucf101_frames/split1', manual, tmp_path / 'data')
  builder = tfds.builder('ucf101_frames/split1',
                         data_dir=str(tmp_path / 'data'))
  report = frames_builder.failure_report_path(builder, 'test')
  rows = dict(line.split('\t') for line in report.read_text().splitlines()[2:])
  assert rows == expected
  assert not builder.is_prepared()
  assert not any(p.name == '2.0.0' for p in report.parent.iterdir())


def test_predict_command_line_on_damaged_videos(tmp_path):
  workdir = run_helpers.write_trained_run(tmp_path / 'run')
  paths, failing = [], []
  for case, (_, data) in enumerate(damaged_videos(seed=3, count=6)):
    path = tmp_path / f'damaged_{case}.avi'
    path.write_bytes(data)
    paths.append(path)
    if builder_verdict(path):
      failing.append(path)
  assert 0 < len(failing) < len(paths)
  result = run_python('-m', 'pasnet_jax.predict', f'--workdir={workdir}',
                      '--top=1', *paths)
  assert result.returncode == errors.BAD_INPUT, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  error_lines = [line for line in result.stderr.splitlines()
            if line.startswith('error:')]
  assert len(error_lines) == len(failing)
  for line, path in zip(error_lines, failing):
    assert str(path) in line
  printed = [line for line in result.stdout.splitlines()
             if not line.startswith(' ')]
  assert printed == [str(p) for p in paths if p not in failing]


# ----------------------------------------------------- PyTorch checkpoints


def small_checkpoints() -> list[bytes]:
  """A training checkpoint with a few ECO tensors, in the zip and in the
  legacy (pickle) format of ECO-pytorch's time."""
  state = {'epoch': 3, 'arch': 'ECO', 'state_dict': {
      'module.base_model.conv1_7x7_s2.weight': torch.randn(
          4, 3, 2, 2, generator=torch.Generator().manual_seed(0)),
      'module.new_fc.bias': torch.zeros(5)}}
  files = []
  for zipped in (True, False):
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=zipped)
    files.append(buffer.getvalue())
  return files


@pytest.mark.parametrize('seed, count', [
    (0, 150 * SCALE), pytest.param(1, 1500, marks=pytest.mark.slow)])
def test_damaged_pytorch_checkpoints_are_refused_in_one_line(
    tmp_path, capsys, seed, count):
  rng = np.random.default_rng(seed)
  originals = small_checkpoints()
  path, out = tmp_path / 'damaged.pth.tar', tmp_path / 'out'
  for case in range(count):
    data, other = originals[case % 2], originals[1 - case % 2]
    kind, damaged = corrupt(rng, data, other)
    path.write_bytes(damaged)
    converter = (eco, openpose)[rng.integers(2)]
    with deadline(f'checkpoint case {case} ({kind})'):
      status = torch_io.run_cli(converter.main, [str(path), str(out)])
    # No damage makes the few tensors a whole network.
    assert status == torch_io.EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == ''
    one_line(captured.err.rstrip('\n'), path)
    assert captured.err.startswith('error: ')
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_converter_command_lines_on_damaged_checkpoints(tmp_path):
  rng = np.random.default_rng(4)
  originals = small_checkpoints()
  for case, converter in enumerate(('eco', 'openpose')):
    _, damaged = corrupt(rng, originals[case], originals[1 - case])
    path, out = tmp_path / f'damaged_{case}.pth', tmp_path / f'out_{case}'
    path.write_bytes(damaged)
    result = run_python('-m', f'convert.{converter}', path, out)
    assert result.returncode == torch_io.EXIT_BAD_INPUT
    assert result.stderr.startswith('error: ') and 'Traceback' not in (
        result.stderr)
    one_line(result.stderr.rstrip('\n'), path)
    assert not out.exists()


# ------------------------------------------------- converted checkpoints


@pytest.fixture(scope='module')
def converted(module_tmp):
  """A small directory as convert.eco writes it: Orbax files and metadata."""
  directory = module_tmp('converted') / 'eco_out'
  variables = {
      'params': {'appearance': {'kernel': np.arange(
          24, dtype=np.float32).reshape(2, 3, 4)},
                 'classifier': {'bias': np.ones(5, np.float32)}},
      'batch_stats': {'appearance': {'mean': np.zeros(4, np.float32)}}}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, variables)
  (directory / torch_io.METADATA_FILE).write_text(
      json.dumps({'converter': 'convert.eco', 'num_classes': 5}))
  return directory, variables


@pytest.mark.parametrize('seed, count', [
    (0, 60 * SCALE), pytest.param(1, 600, marks=pytest.mark.slow)])
def test_damaged_converted_checkpoints_load_intact_or_are_refused(
    tmp_path, converted, seed, count):
  original, variables = converted
  files = sorted(original.rglob('*'))
  files = [p.relative_to(original) for p in files if p.is_file()]
  rng = np.random.default_rng(seed)
  damaged_dir = tmp_path / 'eco_out'
  outcomes = set()
  for case in range(count):
    shutil.copytree(original, damaged_dir)
    target = files[rng.integers(len(files))]
    other = (original / files[rng.integers(len(files))]).read_bytes()
    kind, data = corrupt(rng, (damaged_dir / target).read_bytes() or b'\0',
                         other)
    (damaged_dir / target).write_bytes(data)
    before = tree_digest(damaged_dir)
    with deadline(f'converted case {case} ({kind} {target})'):
      # What convert.pasnet reads, and what training and predict read.
      try:
        restored, _ = torch_io.read_converted(damaged_dir, 'convert.eco')
      except errors.ConversionError as error:
        one_line(str(error), damaged_dir)
        restored = None
      try:
        loaded = checkpoints.load_variables(str(damaged_dir))
      except errors.CheckpointError as error:
        assert str(damaged_dir) in str(error)
        loaded = None
    # Read back, the values are the ones saved: damage is never silent.
    for tree in (restored, loaded):
      if tree is not None:
        for name in ('params', 'batch_stats'):
          assert_same_tree(tree[name], variables[name])
    outcomes.add((restored is None, loaded is None))
    assert tree_digest(damaged_dir) == before
    shutil.rmtree(damaged_dir)
  assert (True, True) in outcomes and (False, False) in outcomes


def assert_same_tree(actual, expected):
  assert actual.keys() == expected.keys()
  for key, value in expected.items():
    if isinstance(value, dict):
      assert_same_tree(actual[key], value)
    else:
      np.testing.assert_array_equal(actual[key], value)


@pytest.mark.parametrize('damaged_file', ['manifest.ocdbt', 'd/'])
def test_pasnet_converter_on_a_damaged_eco_out_prints_one_line(
    tmp_path, converted, damaged_file):
  eco_out, out = tmp_path / 'eco_out', tmp_path / 'out'
  shutil.copytree(converted[0], eco_out)
  # Cut in half: the manifest fails before any array is read; a data file
  # fails one read and Orbax abandons the concurrent reads of the others,
  # which asyncio reported with tracebacks after the error line.
  target = next(p for p in sorted(eco_out.rglob('*')) if p.is_file() and
                str(p.relative_to(eco_out)).startswith(damaged_file))
  target.write_bytes(target.read_bytes()[:target.stat().st_size // 2])
  result = run_python('-m', 'convert.pasnet', '--eco', eco_out, '--fusion',
                      'A', '--num-classes', 5, out)
  assert result.returncode == torch_io.EXIT_BAD_INPUT
  lines = [line for line in result.stderr.splitlines()
           if not line.startswith(('W0000', 'I0000', 'WARNING: All log'))]
  assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr
  assert lines[0].startswith(f'error: {eco_out}: unreadable Orbax checkpoint')
  assert not out.exists()


# ---------------------------------------------------------------- archives


@pytest.mark.parametrize('seed, count', [
    (0, 300 * SCALE), pytest.param(1, 3000, marks=pytest.mark.slow)])
def test_damaged_archives_are_read_or_named(tmp_path, seed, count):
  """The UCF-101 video RAR, the split ZIP and HMDB-51's RAR of RARs, as the
  builders read them; an inner RAR is only ever unpacked whole."""
  videos = data_helpers.rar4_bytes({
      f'UCF-101/YoYo/v_YoYo_g01_c0{i}.avi': VIDEO for i in range(3)})
  split_zip = tmp_path / 'splits.zip'
  data_helpers.write_zip(split_zip, data_helpers.ucf101_split_files(
      ['YoYo/v_YoYo_g01_c01.avi'], ['YoYo/v_YoYo_g01_c02.avi']))
  archives_by_name = {'UCF101.rar': videos,
                      'UCF101TrainTestSplits-RecognitionTask.zip':
                          split_zip.read_bytes(),
                      'hmdb51_org.rar': data_helpers.rar4_bytes(
                          {'yoyo.rar': videos})}
  names = list(archives_by_name)
  rng = np.random.default_rng(seed)
  outcomes = set()
  for case in range(count):
    directory = tmp_path / f'case{case}'
    directory.mkdir()
    name = names[case % len(names)]
    kind, data = corrupt(rng, archives_by_name[name],
                         archives_by_name[names[(case + 1) % len(names)]])
    path = directory / name
    path.write_bytes(data)
    archives.open_rar.cache_clear()
    with deadline(f'archive case {case} ({kind} {name})'):
      try:
        if name.endswith('.zip'):
          archives.read_text_files(path)
        else:
          for ref in archives.index_videos(path, directory / 'scratch'
                                           ).values():
            archives.read_video_bytes(ref)
        outcomes.add(True)
      except errors.DatasetError as error:
        one_line(str(error), path)
        outcomes.add(False)
    for unpacked in (directory / 'scratch').rglob('*'):
      if unpacked.is_file() and not unpacked.name.endswith('.partial'):
        assert unpacked.read_bytes() == videos, (case, kind)
    shutil.rmtree(directory)
  assert outcomes == {True, False}
