"""Preemption: SIGTERM saves the current step, exits 3, and a rerun resumes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pasnet_jax import cli

WORKER = os.path.join(os.path.dirname(__file__), 'train_worker.py')


def _start(data_dir, workdir, steps):
  return subprocess.Popen(
      [sys.executable, WORKER, str(data_dir), str(workdir), str(steps)],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1'))


@pytest.mark.parametrize('signal_number', [
    signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_preemption_saves_and_the_rerun_resumes(signal_number, tmp_path):
  data_dir, workdir = tmp_path / 'tfds', tmp_path / 'run'
  worker = _start(data_dir, workdir, 10_000)
  lines = []
  deadline = time.time() + 300
  while time.time() < deadline:
    line = worker.stdout.readline()
    lines.append(line)
    if 'step 3/10000' in line:
      break
  else:
    worker.kill()
    pytest.fail('training never reached step 3:\n' + ''.join(lines[-30:]))
  worker.send_signal(signal_number)
  output = ''.join(lines) + worker.communicate(timeout=300)[0]
  assert worker.returncode == cli.PREEMPTED, output[-3000:]
  name = signal.Signals(signal_number).name
  assert f'{name} received: saved step' in output
  saved = int(output.split(f'{name} received: saved step ')[1].split()[0])
  assert saved >= 3

  rerun = _start(data_dir, workdir, saved + 1)
  output = rerun.communicate(timeout=300)[0]
  assert rerun.returncode == 0, output[-3000:]
  assert f'from step {saved}' in output
  assert f'step {saved + 1}/{saved + 1}' in output
