"""Helpers shared by the test modules."""

import atexit
import os
import shutil
import tempfile

# Tests that need several devices start their own processes with
# --xla_force_host_platform_device_count; the in-process suite keeps the
# default single CPU device so compiled functions stay comparable.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Many tests train the same tiny configs again (a resumed run, its rerun,
# the workers of the fault tests), and each run builds its jitted step
# afresh. One compilation cache for the session, inherited by the worker
# processes, compiles each program once. It starts empty on every run.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='pasnet_jax_test_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache

import jax
import numpy as np
import pytest

from pasnet_jax.models.pasnet import init_variables


def random_variables(model, video_shape, seed=0):
  """The model's fast initialiser (models.pasnet.init_variables), reshaped
  for tests that need a live signal.

  Kernels get He's scale instead of LeCun's, so signals neither explode nor
  vanish through the deep pose branch; BatchNorm scales, offsets and
  statistics and the biases become random but plausible; a fusion conv
  keeps the model's pass-through.
  """
  rng = np.random.default_rng(seed)
  initial = init_variables(model, seed, video_shape)

  def draw(path, leaf):
    names = [getattr(p, 'key', str(p)) for p in path]
    shape = leaf.shape
    if names[0] == 'params' and names[1] == 'fusion':
      return leaf
    if names[-1] == 'kernel':
      return leaf * np.float32(np.sqrt(2.0))
    if names[-1] == 'scale':
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if names[-1] == 'bias':
      return rng.normal(0.0, 0.05, shape).astype(np.float32)
    if names[-1] == 'mean':
      return rng.normal(0.0, 0.1, shape).astype(np.float32)
    return rng.uniform(0.5, 2.0, shape).astype(np.float32)  # 'var'

  return jax.tree_util.tree_map_with_path(draw, initial)


@pytest.fixture(scope='module')
def module_tmp(tmp_path_factory):
  """module_tmp(name) -> a new directory, removed when the module ends.

  The suite's runs, checkpoints and converted models add up to about 24 GB;
  kept until the session ends (with every passing test's tmp_path, which
  pyproject's tmp_path_retention_policy removes) they filled CI's disk.
  """
  made = []

  def make(name):
    made.append(tmp_path_factory.mktemp(name))
    return made[-1]

  yield make
  for path in made:
    shutil.rmtree(path, ignore_errors=True)


# Training runs on the tiny dataset that several test modules read; each is
# trained once per session. run_helpers imports this module, hence the
# imports inside.


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory):
  from tests import run_helpers  # pylint: disable=g-import-not-at-top
  return run_helpers.tiny_dataset(str(tmp_path_factory.mktemp('tfds')))


@pytest.fixture(scope='session')
def uninterrupted(tmp_path_factory, tiny_dataset):
  """(workdir, results) of 4 uninterrupted steps, profiled."""
  from pasnet_jax import train  # pylint: disable=g-import-not-at-top
  from tests import run_helpers  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  results = train.train_and_evaluate(
      run_helpers.small_config(profile_steps=1), workdir, tiny_dataset)
  return workdir, results


@pytest.fixture(scope='session')
def twice(tmp_path_factory, tiny_dataset):
  """The workdir of a twice-finetune run: 2 steps of ECO, 1 of PAS-Net."""
  from pasnet_jax import train  # pylint: disable=g-import-not-at-top
  from tests import run_helpers  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('twice'))
  config = run_helpers.small_config(strategy='twice', num_train_steps=1)
  config.model.fusion = 'A+pool(I)+pool(F)'
  train.train_and_evaluate(config, workdir, tiny_dataset)
  return workdir
