"""Every shipped config is valid and loads from anywhere, config arguments
parse as documented, and the models package offers what a config builds."""

import glob
import importlib.util
import os
import shutil
import subprocess
import sys

import flax
import pytest

from configs import default, hmdb51, synthetic, ucf101
from pasnet_jax import config_checks
from pasnet_jax import config_files
from pasnet_jax import errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('module', [default, ucf101, hmdb51, synthetic])
def test_shipped_configs_validate(module):
  config_checks.check_config(module.get_config())


def test_config_arguments_keep_commas_inside_fusion_names():
  config = ucf101.get_config('split=3,frames=32,fusion=conv(A,I,F)')
  assert config.dataset.config == 'split3'
  assert config.frames == 32
  assert config.model.fusion == 'conv(A,I,F)'
  assert hmdb51.get_config('fusion=A').dataset.name == 'hmdb51_frames'


def test_unknown_config_argument_lists_the_valid_ones():
  with pytest.raises(errors.ConfigArgumentError, match=(
      r"unknown config argument 'splits' \(--config=FILE:key=value,...\); "
      'valid: frames, fusion, split')):
    ucf101.get_config('splits=2')


def test_config_argument_of_the_wrong_type_names_the_key():
  with pytest.raises(errors.ConfigArgumentError, match=(
      r"config argument split='two' is not of type int \(e.g. split=1\)")):
    hmdb51.get_config('split=two')


def _every_config_file():
  """{name: module} of each configs/*.py with a get_config, new ones too."""
  modules = {}
  for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))):
    name = os.path.basename(path)[:-3]
    spec = importlib.util.spec_from_file_location(f'_every_config_{name}',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, 'get_config'):
      modules[name] = module
  return modules


def test_every_key_of_every_config_has_a_one_line_meaning():
  modules = _every_config_file()
  assert {'default', 'ucf101', 'hmdb51', 'synthetic'} <= set(modules)
  for name, module in modules.items():
    keys = {key for key, _ in config_files.flat_items(module.get_config())}
    assert keys - set(default.MEANINGS) == set(), (
        f'configs/{name}.py has keys without a meaning in default.MEANINGS')
  for key, meaning in default.MEANINGS.items():
    assert meaning and '\n' not in meaning, key


def test_every_meaning_is_of_a_key_there_is():
  keys = [key for key, _ in config_files.flat_items(default.get_config())]
  assert sorted(default.MEANINGS) == keys


def test_paper_defaults():
  config = ucf101.get_config()
  assert (config.frames, config.image_size) == (16, 224)
  assert config.optimizer.momentum == 0.9
  assert config.optimizer.weight_decay == 5e-4
  assert config.optimizer.learning_rate == 0.001
  assert config.model.dropout == 0.3
  assert config.optimizer.clip_norm == 50
  assert config.batch_size == 64


def test_configs_load_from_any_path_and_working_directory(tmp_path):
  # A copy elsewhere, read from another directory, with only the package
  # importable: `configs` itself is not on the path.
  elsewhere = tmp_path / 'elsewhere' / 'configs'
  shutil.copytree(os.path.join(ROOT, 'configs'), elsewhere)
  packages = tmp_path / 'packages'
  packages.mkdir()
  (packages / 'pasnet_jax').symlink_to(os.path.join(ROOT, 'pasnet_jax'))
  script = ('import sys\n'
            'from absl import flags\n'
            'from ml_collections import config_flags\n'
            "config_flags.DEFINE_config_file('config')\n"
            'flags.FLAGS(sys.argv)\n'
            'config = flags.FLAGS.config\n'
            'print(config.dataset.name, config.dataset.config, config.frames)\n')
  result = subprocess.run(
      [sys.executable, '-c', script, f'--config={elsewhere}/ucf101.py:split=2'],
      cwd=tmp_path, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=str(packages)))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ['ucf101_frames', 'split2', '16']


def test_models_package_exports_the_networks_and_their_factory():
  from pasnet_jax import models  # pylint: disable=g-import-not-at-top
  config = synthetic.get_config()
  model = models.create_model(config.model, 10)
  assert isinstance(model, models.PASNet)
  assert (model.num_classes, model.fusion) == (10, config.model.fusion)
  assert models.create_model(config.model, 10, fusion='A').fusion == 'A'
  for name in ('OpenPose', 'Appearance', 'Spatiotemporal', 'Fusion'):
    assert issubclass(getattr(models, name), flax.linen.Module), name
