"""Every shipped config is valid, and config arguments parse as documented."""

import pytest

from configs import default, hmdb51, synthetic, ucf101
from pasnet_jax import config_checks
from pasnet_jax import errors


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
  with pytest.raises(ValueError, match="Unknown config argument 'splits'; valid: frames, fusion, split"):
    ucf101.get_config('splits=2')


def test_paper_defaults():
  config = ucf101.get_config()
  assert (config.frames, config.image_size) == (16, 224)
  assert config.optimizer.momentum == 0.9
  assert config.optimizer.weight_decay == 5e-4
  assert config.optimizer.learning_rate == 0.001
  assert config.model.dropout == 0.3
  assert config.optimizer.clip_norm == 50
  assert config.batch_size == 64


def test_every_invalid_value_is_named_at_once():
  config = synthetic.get_config()
  config.image_size, config.frames = 100, 0
  config.model.fusion, config.optimizer.name = 'A+X', 'lamb'
  with pytest.raises(errors.ConfigError) as failure:
    config_checks.check_config(config)
  message = str(failure.value)
  for part in ("model.fusion='A+X' is not a style", 'image_size=100 must be a '
               'positive multiple of 32', 'frames=0: need at least one frame',
               "optimizer.name='lamb'; valid: sgd, adam"):
    assert part in message


def test_eval_batch_that_does_not_split_over_devices_says_what_to_set(monkeypatch):
  config = synthetic.get_config()
  config.batch_size, config.eval_batch_size = 8, 20
  monkeypatch.setattr(config_checks.jax, 'device_count', lambda: 8)
  with pytest.raises(errors.ConfigError, match='eval_batch_size=20 does not divide '
                     'over 8 devices; set --config.eval_batch_size to a multiple of 8'):
    config_checks.check_devices(config)
