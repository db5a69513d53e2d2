"""The training command's answers to bad configs (one line, exit 2, no work)
and its listing of the config's keys (--print_config)."""

import os
import subprocess
import sys

import pytest

from configs import default
from configs import ucf101
from pasnet_jax import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREE_DEVICES = {'XLA_FLAGS': '--xla_force_host_platform_device_count=3',
                 'JAX_PLATFORMS': 'cpu'}


def _run(*args, env=None):
  return subprocess.run(
      [sys.executable, '-m', 'pasnet_jax.main', *args], cwd=ROOT,
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **(env or {})))


def _train(workdir, *overrides, env=None):
  return _run('--config=configs/synthetic.py', f'--workdir={workdir}',
              *overrides, env=env)


def _only_line(result):
  """The one line of stderr, after checking that nothing else came."""
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


@pytest.mark.parametrize('overrides, message', [
    (['--config.num_train_step=3'],
     'error: unknown config key num_train_step (closest: num_train_steps, '
     'stage1.num_train_steps, accumulation_steps); --print_config lists '
     'every key with its meaning'),
    (['--config.optimiser.learning_rate=1', '--config.model.fussion=A'],
     'error: unknown config keys optimiser.learning_rate (closest: '
     'optimizer.learning_rate, stage1.learning_rate, optimizer.decay_at), '
     'model.fussion (closest: model.fusion, model.fusion_conv_init, '
     'model.pose_conv); '
     '--print_config lists every key with its meaning'),
    (['--config.init.eco=/nonexistent/eco', '--config.init.workdir=/no/run'],
     'error: Invalid config: init.eco=/nonexistent/eco does not exist; give '
     'the directory python -m convert.eco wrote; init.workdir=/no/run does '
     "not exist; give a training run's --workdir"),
    (['--config.frames=abc'],
     "error: flag --config.frames=abc: invalid literal for int() with base "
     "10: 'abc'"),
    (['--config.model.fusion=A+B'],
     "error: Invalid config: model.fusion='A+B' is not a style; valid: A, I, "
     'E*A, A+E*A, conv(A,E*A), A+pool(I), conv(A,I), A+pool(I)+pool(F), '
     'conv(A,I,F)'),
    (['--config.model.bn_policy=partialbn'],
     "error: Invalid config: model.bn_policy='partialbn'; valid: trainable, "
     'partial, frozen'),
    (['--config.image_size=100', '--config.frames=0'],
     'error: Invalid config: image_size=100 must be a positive multiple of 32 '
     '(e.g. 224); frames=0: need at least one frame (K >= 1); '
     'eval_short_side=72 must be at least image_size=100'),
])
def test_bad_config_is_one_line_before_anything_else(overrides, message,
                                                     tmp_path):
  workdir = tmp_path / 'run'
  assert _only_line(_train(workdir, *overrides)) == message
  assert not workdir.exists()


@pytest.mark.parametrize('config, message', [
    ('configs/synthetic.py:frame=8',
     "error: unknown config argument 'frame' (--config=FILE:key=value,...); "
     'valid: frames, fusion'),
    ('configs/ucf101.py:split=2,frames=many',
     "error: config argument frames='many' is not of type int (e.g. "
     'frames=16)'),
    ('configs/ucf10.py:split=2',
     'error: config file configs/ucf10.py does not exist; give '
     '--config=FILE, e.g. configs/ucf101.py'),
])
def test_bad_config_argument_is_one_line(config, message, tmp_path):
  workdir = tmp_path / 'run'
  # With an override as well, a missing file was a traceback.
  result = _run(f'--config={config}', '--config.frames=8',
                f'--workdir={workdir}')
  assert _only_line(result) == message
  assert not workdir.exists()


def test_batch_that_does_not_split_over_the_devices_is_one_line(tmp_path):
  # Checked once jax.distributed has started, and still before the config
  # is logged.
  workdir = tmp_path / 'run'
  result = _train(workdir, env=THREE_DEVICES)
  assert _only_line(result) == (
      'error: batch_size / accumulation_steps = 8 clips per microbatch does '
      'not divide over 3 devices; set --config.batch_size to a multiple of 3 '
      'or change --config.accumulation_steps')
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))


@pytest.mark.parametrize('workdir_given', [True, False])
def test_print_config_lists_each_key_with_its_value_and_meaning(
    workdir_given, tmp_path):
  workdir = tmp_path / 'run'
  result = _run('--config=configs/ucf101.py:split=2',
                '--config.optimizer.learning_rate=0.0005', '--print_config',
                *([f'--workdir={workdir}'] if workdir_given else []))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  lines = result.stdout.splitlines()
  config = ucf101.get_config()
  assert [line.split(' = ')[0] for line in lines] == [
      key for key, _ in config_files.flat_items(config)]
  printed = {line.split(' = ')[0]: line for line in lines}
  assert printed['optimizer.learning_rate'] == (
      'optimizer.learning_rate = 0.0005          # '
      + default.MEANINGS['optimizer.learning_rate'])
  assert printed['dataset.config'].startswith("dataset.config = 'split2'  ")
  for key, line in printed.items():
    assert line.endswith('  # ' + default.MEANINGS[key]), line
  assert not workdir.exists()


def test_print_config_still_refuses_a_bad_value(tmp_path):
  result = _run('--config=configs/synthetic.py', '--config.frames=0',
                '--print_config')
  assert _only_line(result) == (
      'error: Invalid config: frames=0: need at least one frame (K >= 1)')
  assert result.stdout == ''


def test_training_needs_a_workdir():
  assert _only_line(_run('--config=configs/synthetic.py')) == (
      'error: flags workdir=None, print_config=False: --workdir is required '
      'to train (--print_config needs none)')


def test_help_lists_print_config():
  result = _run('--help')
  assert '--[no]print_config: Print the resolved config' in result.stdout
  assert '--config.KEY=VALUE sets any key' in result.stdout


def test_unwritable_workdir_is_one_clear_line(tmp_path):
  # As root, permissions do not stop a write; a path through a file does.
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  result = _train(blocker / 'run')
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert lines == [f'error: Cannot write to workdir {blocker}/run: Not a '
                   'directory. Give a writable --workdir.']
  assert 'Traceback' not in result.stderr
