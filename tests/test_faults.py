"""Faults during training, each through the real program in a subprocess:
preemption, kill -9 (during an asynchronous save too), a full disk and a
process of a distributed run that dies. Each ends with a clear message and
leaves the last complete checkpoint to resume from."""

import glob
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from pasnet_jax import checkpoints
from pasnet_jax import errors
from tests import run_helpers

WORKER = os.path.join(os.path.dirname(__file__), 'train_worker.py')


@pytest.fixture(scope='module')
def data_dir(module_tmp):
  directory = module_tmp('tfds')
  run_helpers.tiny_dataset(str(directory))
  return directory


@pytest.fixture(scope='module')
def compile_cache(module_tmp):
  """Compiled steps shared by the module's runs: each rerun saves ~10 s."""
  return module_tmp('jax_cache')


class Worker:
  """A training process whose output is collected while it runs."""

  def __init__(self, data_dir, workdir, steps, *options, cache=None,
               file_size_limit_mb=0):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1',
               JAX_PLATFORMS='cpu')
    if cache:
      env['JAX_COMPILATION_CACHE_DIR'] = str(cache)
    self.workdir = str(workdir)
    # A killed run leaves its save's temporary directory behind, under the
    # name the next save of that step uses.
    self._earlier_saves = self._temporary_dirs('*')
    command = [sys.executable, WORKER, str(data_dir), self.workdir, str(steps),
               *options]
    if file_size_limit_mb:
      # Python ignores SIGXFSZ, so a write over the limit fails with EFBIG,
      # as one to a full disk fails with ENOSPC. The shell sets the limit:
      # a preexec_fn would fork this multithreaded (JAX) process.
      command = ['/bin/sh', '-c', f'ulimit -f {file_size_limit_mb * 2048} && '
                 'exec "$@"', 'sh', *command]
    self.process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env)
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.process.stdout:
      self.lines.append(line)

  def output(self) -> str:
    return ''.join(self.lines)

  def wait_for(self, condition, what: str, timeout: float = 300) -> None:
    """Polls `condition` often enough to land inside a 2 s checkpoint save."""
    deadline = time.time() + timeout
    while not condition():
      if self.process.poll() is not None or time.time() > deadline:
        self.process.kill()
        pytest.fail(f'{what} never happened:\n' + self.finish()[-3000:])
      time.sleep(0.005)

  def finish(self, timeout: float = 300) -> str:
    self.process.wait(timeout=timeout)
    # The output ends when every process holding the pipe has: the worker's
    # input processes must not outlive it.
    self._reader.join(timeout=60)
    if self._reader.is_alive():
      pytest.fail('processes the worker started outlived it, holding its '
                  'output:\n' + self.output()[-3000:])
    return self.output()

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.workdir, checkpoints.CHECKPOINT_DIR)

  def _temporary_dirs(self, step) -> set[tuple[str, int, int]]:
    """(path, inode, modification time) of Orbax's temporary directories
    for `step` ('*': any)."""
    found = set()
    for path in glob.glob(os.path.join(self.checkpoint_dir,
                                       f'{step}.orbax-checkpoint-tmp*')):
      try:
        stat = os.stat(path)
      except FileNotFoundError:  # renamed or removed since the glob
        continue
      found.add((path, stat.st_ino, stat.st_mtime_ns))
    return found

  def saving(self, step: int) -> bool:
    """True while Orbax writes `step` into its temporary directory, or when
    a killed run left that directory."""
    return bool(self._temporary_dirs(step))

  def saving_anew(self, step: int) -> bool:
    """True while this worker's Orbax writes `step`: a directory a killed
    run left counts only once it is made again or written to."""
    return bool(self._temporary_dirs(step) - self._earlier_saves)


def _progress_lines(output: str) -> str:
  """The lines of a run's output that say where it started and stopped,
  without Orbax's many lines about each save."""
  keep = ('Found', 'Resuming', 'Training', 'step ', 'received', 'error',
          'Error', 'Traceback', 'Finished', 'saving')
  return '\n'.join(line for line in output.splitlines()
                   if line.startswith(('INFO:absl:', 'WARNING:absl:', 'error'))
                   and any(k in line for k in keep))


def resumed_from(output: str) -> int | None:
  match = re.search(r'Resuming .* from step (\d+)', output)
  return int(match.group(1)) if match else None


@pytest.mark.parametrize('signal_number', [
    signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_preemption_saves_and_the_rerun_resumes(signal_number, data_dir,
                                                compile_cache, tmp_path):
  workdir = tmp_path / 'run'
  worker = Worker(data_dir, workdir, 10_000, cache=compile_cache)
  worker.wait_for(lambda: 'step 3/10000' in worker.output(), 'step 3')
  worker.process.send_signal(signal_number)
  output = first_output = worker.finish()
  assert worker.process.returncode == errors.PREEMPTED, output[-3000:]
  name = signal.Signals(signal_number).name
  assert f'{name} received: saved step' in output
  saved = int(output.split(f'{name} received: saved step ')[1].split()[0])
  assert saved >= 3

  rerun = Worker(data_dir, workdir, saved + 1, cache=compile_cache)
  output = rerun.finish()
  assert rerun.process.returncode == 0, output[-3000:]
  assert resumed_from(output) == saved, (
      _progress_lines(first_output) + '\n-- the rerun:\n' +
      _progress_lines(output))
  assert f'step {saved + 1}/{saved + 1}' in output


def test_kill_during_an_async_save_resumes_from_the_last_complete_step(
    data_dir, compile_cache, tmp_path):
  workdir = tmp_path / 'run'
  worker = Worker(data_dir, workdir, 4, '--checkpoint-every', '1',
                  cache=compile_cache)
  worker.wait_for(lambda: worker.saving(3), 'the save of step 3')
  worker.process.kill()
  output = worker.finish()
  assert worker.process.returncode == -signal.SIGKILL, output[-3000:]
  # Killed mid-save: step 3 exists only as Orbax's temporary directory.
  assert worker.saving(3)
  assert checkpoints.complete_steps(worker.checkpoint_dir) == [1, 2]

  rerun = Worker(data_dir, workdir, 4, '--checkpoint-every', '1',
                 cache=compile_cache)
  output = rerun.finish()
  assert rerun.process.returncode == 0, output[-3000:]
  assert resumed_from(output) == 2
  assert 'step 3/4' in output and 'step 1/4' not in output
  assert checkpoints.complete_steps(rerun.checkpoint_dir)[-1] == 4
  assert not rerun.saving(3)


def _leaves(workdir):
  variables = checkpoints.load_variables(str(workdir), 'latest')
  return jax.tree_util.tree_flatten_with_path(variables)[0]


@pytest.mark.slow
def test_kill_9_at_five_random_moments_ends_as_an_uninterrupted_run(
    data_dir, compile_cache, tmp_path):
  steps = 12
  reference = Worker(data_dir, tmp_path / 'reference', steps,
                     cache=compile_cache)
  output = reference.finish()
  assert reference.process.returncode == 0, output[-3000:]

  rng = random.Random(20261127)
  workdir = tmp_path / 'killed'
  complete = []
  for kill in range(5):
    worker = Worker(data_dir, workdir, steps, '--checkpoint-every', '1',
                    cache=compile_cache)
    start = complete[-1] if complete else 0
    target = start + rng.randint(1, 2)
    # The first kill lands inside a save for sure; later ones by chance.
    if kill == 0 or rng.random() < 0.4:
      worker.wait_for(lambda: worker.saving_anew(target),
                      f'the save of {target}')
      if kill:
        time.sleep(rng.uniform(0.0, 0.5))
    else:
      worker.wait_for(lambda: f'step {target}/{steps}' in worker.output(),
                      f'step {target}')
      time.sleep(rng.uniform(0.0, 1.5))
    worker.process.kill()
    output = worker.finish()
    assert worker.process.returncode == -signal.SIGKILL, output[-3000:]
    assert resumed_from(output) == (complete[-1] if complete else None)
    if kill == 0:
      assert worker.saving(target)
      assert target not in checkpoints.complete_steps(worker.checkpoint_dir)
    complete = checkpoints.complete_steps(worker.checkpoint_dir)

  final = Worker(data_dir, workdir, steps, '--checkpoint-every', '1',
                 cache=compile_cache)
  output = final.finish()
  assert final.process.returncode == 0, output[-3000:]
  assert resumed_from(output) == complete[-1]
  resumed, straight = _leaves(workdir), _leaves(tmp_path / 'reference')
  assert [path for path, _ in resumed] == [path for path, _ in straight]
  for (path, a), (_, b) in zip(resumed, straight):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_a_full_disk_stops_with_a_message_and_keeps_the_last_checkpoint(
    data_dir, compile_cache, tmp_path):
  workdir = tmp_path / 'run'
  first = Worker(data_dir, workdir, 1, cache=compile_cache)
  output = first.finish()
  assert first.process.returncode == 0, output[-3000:]
  before = _leaves(workdir)

  # A checkpoint's largest file is ~300 MB: no save fits under 64 MB.
  worker = Worker(data_dir, workdir, 3, '--checkpoint-every', '1',
                  cache=compile_cache, file_size_limit_mb=64)
  output = worker.finish()
  assert worker.process.returncode == errors.BAD_INPUT, output[-3000:]
  error_lines = [line for line in output.splitlines() if line.startswith('error:')]
  assert len(error_lines) == 1, output[-3000:]
  assert error_lines[0].startswith(
      f'error: Cannot write checkpoint step 2 in {worker.checkpoint_dir}: '
      'File too large. Free space there')
  assert 'it resumes from step 1, the last complete checkpoint' in error_lines[0]
  assert checkpoints.complete_steps(worker.checkpoint_dir) == [1]
  after = _leaves(workdir)
  for (_, a), (_, b) in zip(after, before, strict=True):
    np.testing.assert_array_equal(a, b)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_a_dead_peer_stops_the_other_process_with_a_message(data_dir, tmp_path):
  coordinator = f'127.0.0.1:{_free_port()}'
  workers = [Worker(data_dir, tmp_path / 'run', 10_000, '--coordinator',
                    coordinator, '--num-processes', '2', '--process-id', str(i),
                    '--timeout', '30') for i in range(2)]
  survivor, victim = workers
  survivor.wait_for(lambda: 'step 3/10000' in survivor.output(), 'step 3')
  victim.process.kill()
  killed_at = time.time()
  output = survivor.finish(timeout=300)
  elapsed = time.time() - killed_at
  victim.finish()
  assert survivor.process.returncode == errors.PEER_LOST, output[-3000:]
  assert elapsed < 120, elapsed
  error_lines = [line for line in output.splitlines() if line.startswith('error:')]
  assert len(error_lines) == 1, output[-3000:]
  assert error_lines[0].startswith('error: An operation across the 2 processes '
                              'failed')
  assert 'another process has most likely died' in error_lines[0]
