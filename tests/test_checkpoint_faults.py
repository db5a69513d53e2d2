"""Unusable checkpoints through the programs: resuming a workdir, starting
from config.init.workdir, and `python -m pasnet_jax.evaluate`. Each case is
one `error:` line naming the file or key, exit 2, no traceback."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from pasnet_jax import checkpoints
from pasnet_jax import errors
from tests import run_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, 'tests', 'train_worker.py')
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', JAX_PLATFORMS='cpu')


@pytest.fixture(scope='module')
def data_dir(module_tmp):
  directory = module_tmp('tfds')
  run_helpers.tiny_dataset(str(directory))
  return str(directory)


@pytest.fixture(scope='module')
def finished_run(data_dir, module_tmp):
  """A run of one step: fusion A, K=2, 32 x 32, ten classes."""
  workdir = str(module_tmp('finished') / 'run')
  result = subprocess.run([sys.executable, WORKER, data_dir, workdir, '1'],
                          capture_output=True, text=True, env=ENV, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def _copy(run: str, destination) -> str:
  """A copy sharing the run's files: edits must replace files, not rewrite them."""
  shutil.copytree(run, destination, copy_function=os.link)
  return str(destination)


def _edit_json(path: str, change) -> None:
  with open(path) as f:
    payload = json.load(f)
  change(payload)
  os.remove(path)
  checkpoints.write_json_atomically(path, payload)


def _truncate_largest_file(workdir: str) -> None:
  files = glob.glob(os.path.join(workdir, 'checkpoints', '*', 'state', '**', '*'),
                    recursive=True)
  largest = max((f for f in files if os.path.isfile(f)), key=os.path.getsize)
  size = os.path.getsize(largest)
  with open(largest, 'rb') as f:
    head = f.read(size // 2)
  os.remove(largest)
  with open(largest, 'wb') as f:
    f.write(head)


def _newer_format(workdir: str) -> None:
  _edit_json(os.path.join(workdir, checkpoints.FORMAT_FILE),
             lambda p: p.update(format_version=checkpoints.FORMAT_VERSION + 1))


def _another_model_checkpoint(path) -> str:
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, {'params': {'pose': {'conv1_1': {
        'kernel': np.zeros((3, 3, 3, 64), np.float32)}}}})
  return str(path)


def _train(data_dir, workdir, *options):
  return subprocess.run([sys.executable, WORKER, data_dir, workdir, '2', *options],
                        capture_output=True, text=True, env=ENV, timeout=600)


def _evaluate(workdir):
  return subprocess.run([sys.executable, '-m', 'pasnet_jax.evaluate',
                         f'--workdir={workdir}'], cwd=ROOT, capture_output=True,
                        text=True, env=ENV, timeout=600)


def _assert_one_clear_line(result, *expected):
  assert result.returncode == errors.BAD_INPUT, result.stderr[-3000:]
  error_lines = [line for line in result.stderr.splitlines()
            if line.startswith('error:')]
  assert len(error_lines) == 1, result.stderr[-3000:]
  for part in expected:
    assert part in error_lines[0], error_lines[0]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]


def test_resuming_another_configs_run_names_the_keys(data_dir, finished_run,
                                                      tmp_path):
  workdir = _copy(finished_run, tmp_path / 'run')
  result = _train(data_dir, workdir, '--set', 'model.fusion=A+pool(I)',
                  '--set', 'frames=4')
  _assert_one_clear_line(
      result, f"Workdir {workdir} holds a run with model.fusion='A', frames=2, "
      "but this config has model.fusion='A+pool(I)', frames=4. Use a new "
      '--workdir, or to resume that run set --config.model.fusion=A '
      '--config.frames=2.')


@pytest.mark.slow
def test_resuming_a_run_with_another_class_count_is_refused(
    data_dir, finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path / 'run')
  _edit_json(os.path.join(workdir, checkpoints.FORMAT_FILE),
             lambda p: p['identity'].update(num_classes=5))
  result = _train(data_dir, workdir)
  _assert_one_clear_line(
      result, f'Workdir {workdir} holds a run with num_classes=5, but this '
      'config has num_classes=10', 'use its dataset (5 classes)')


def test_resuming_a_truncated_checkpoint_names_the_step(data_dir, finished_run,
                                                        tmp_path):
  workdir = _copy(finished_run, tmp_path / 'run')
  _truncate_largest_file(workdir)
  result = _train(data_dir, workdir)
  _assert_one_clear_line(
      result, f'Checkpoint {workdir}/checkpoints/1 cannot be read (',
      'its files are damaged or incomplete. Retrain: no earlier step is kept.')


@pytest.mark.slow
def test_resuming_a_newer_format_says_to_upgrade(data_dir, finished_run,
                                                 tmp_path):
  workdir = _copy(finished_run, tmp_path / 'run')
  _newer_format(workdir)
  result = _train(data_dir, workdir)
  _assert_one_clear_line(
      result, f'{workdir}/{checkpoints.FORMAT_FILE}: the checkpoints are in '
      f'format {checkpoints.FORMAT_VERSION + 1}', 'Upgrade pasnet_jax')


@pytest.mark.slow
def test_initial_weights_of_another_model_are_refused(data_dir, tmp_path):
  foreign = _another_model_checkpoint(tmp_path / 'openpose')
  result = _train(data_dir, str(tmp_path / 'run'), '--init-workdir', foreign)
  _assert_one_clear_line(
      result, f'None of the 1 tensors of workdir {foreign} fit this model',
      'params/pose/conv1_1/kernel')


@pytest.mark.slow
def test_truncated_initial_weights_name_the_step(data_dir, finished_run,
                                                 tmp_path):
  source = _copy(finished_run, tmp_path / 'source')
  _truncate_largest_file(source)
  result = _train(data_dir, str(tmp_path / 'run'), '--init-workdir', source)
  _assert_one_clear_line(
      result, f'Checkpoint {source}/checkpoints/1 cannot be read (')


def test_initial_weights_in_a_newer_format_say_to_upgrade(
    data_dir, finished_run, tmp_path):
  source = _copy(finished_run, tmp_path / 'source')
  _newer_format(source)
  result = _train(data_dir, str(tmp_path / 'run'), '--init-workdir', source)
  _assert_one_clear_line(result, f'{source}/{checkpoints.FORMAT_FILE}',
                         'Upgrade pasnet_jax')


def test_evaluating_with_another_class_count_names_the_classifier(
    finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path / 'run')
  _edit_json(os.path.join(workdir, 'results.json'),
             lambda p: p.update(class_names=p['class_names'][:5]))
  _assert_one_clear_line(
      _evaluate(workdir), f'The checkpoint of {workdir} does not fit the model '
      'its config describes', 'params/classifier/bias has shape (10,), this '
      'model (5,)')


@pytest.mark.slow
def test_evaluating_a_checkpoint_of_another_model_names_the_keys(
    finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path / 'run')
  _edit_json(os.path.join(workdir, 'config.json'),
             lambda p: p['model'].update(fusion='A+pool(I)'))
  _assert_one_clear_line(
      _evaluate(workdir), f'The checkpoint of {workdir} does not fit the model '
      'its config describes', 'pose/', 'is missing')


@pytest.mark.slow
def test_evaluating_a_truncated_checkpoint_names_the_step(finished_run,
                                                          tmp_path):
  workdir = _copy(finished_run, tmp_path / 'run')
  _truncate_largest_file(workdir)
  _assert_one_clear_line(_evaluate(workdir),
                         f'Checkpoint {workdir}/checkpoints/1 cannot be read (')


@pytest.mark.slow
def test_evaluating_a_newer_format_says_to_upgrade(finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path / 'run')
  _newer_format(workdir)
  _assert_one_clear_line(_evaluate(workdir),
                         f'{workdir}/{checkpoints.FORMAT_FILE}',
                         'Upgrade pasnet_jax')
