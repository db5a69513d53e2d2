"""Data parallelism: several devices and several processes train in step."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), 'parallel_worker.py')


def _run(args, devices=1, timeout=600):
  env = dict(os.environ,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.Popen([sys.executable, WORKER, *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _wait(process, timeout=600):
  output, _ = process.communicate(timeout=timeout)
  assert process.returncode == 0, output[-3000:]


def _load(path):
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def _assert_same(a, b):
  """Parameters within 1e-5 of their scale; BatchNorm statistics within 1e-4.

  Batch statistics are sums over the whole batch, which the devices add up
  in another order, so they differ in the last float32 digits.
  """
  assert a.keys() == b.keys()
  errors = {}
  largest_update = max(float(np.max(np.abs(a[name] - a['initial/' + name[7:]])))
                       for name in a if name.startswith('params/'))
  largest_difference = max(float(np.max(np.abs(a[name] - b[name])))
                           for name in a if name.startswith('params/'))
  # The steps moved the parameters far more than the device count did.
  assert largest_difference < 0.01 * largest_update
  for name in a:
    tolerance = 1e-4 if name.startswith('batch_stats') else 1e-5
    # Biases in front of a train-mode BatchNorm have no gradient and stay at
    # rounding noise around zero: measure them against 1e-2, not their size.
    scale = max(float(np.max(np.abs(b[name]))), 1e-2)
    error = float(np.max(np.abs(a[name] - b[name])))
    if error > tolerance * scale:
      errors[name] = (error, scale)
  assert not errors, errors


@pytest.fixture(scope='module')
def single_device(module_tmp):
  out = module_tmp('single') / 'params.npz'
  _wait(_run([str(out)], devices=1))
  return _load(out)


def test_four_devices_train_like_one(single_device, tmp_path):
  out = tmp_path / 'params.npz'
  _wait(_run([str(out)], devices=4))
  _assert_same(_load(out), single_device)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one(single_device, tmp_path):
  out = tmp_path / 'params.npz'
  coordinator = f'127.0.0.1:{_free_port()}'
  workers = [_run([str(out), '--coordinator', coordinator, '--num-processes', '2',
                   '--process-id', str(i)]) for i in range(2)]
  for worker in workers:
    _wait(worker)
  _assert_same(_load(out), single_device)
