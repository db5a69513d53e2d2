"""Every bad config value is refused on entry, naming the key and the values
allowed, before any work."""

import jax
import pytest

from configs import synthetic
from pasnet_jax import config_checks
from pasnet_jax import errors
from tests import run_helpers


def config_with(**changes):
  return run_helpers.changed(synthetic.get_config(), **changes)


def test_config_errors_name_the_key():
  with pytest.raises(errors.ConfigError, match="model.fusion='A\\+B'.*conv\\(A,I,F\\)"):
    config_checks.check_config(config_with(**{'model.fusion': 'A+B'}))
  with pytest.raises(errors.ConfigError, match='image_size=100 must be a positive multiple of 32'):
    config_checks.check_config(config_with(image_size=100))
  with pytest.raises(errors.ConfigError, match=r'frames=0: need at least one frame'):
    config_checks.check_config(config_with(frames=0))


@pytest.mark.parametrize('key, value, message', [
    ('model.bn_policy', 'partialbn',
     "model.bn_policy='partialbn'; valid: trainable, partial, frozen"),
    ('model.fusion_conv_init', 'zeros',
     "model.fusion_conv_init='zeros'; valid: identity, random"),
    ('model.eco_layout', 'paper', "model.eco_layout='paper'; valid: official, early"),
    ('model.dtype', 'float16', "model.dtype='float16'; valid: float32, bfloat16"),
    ('distributed.initialize', 'yes',
     "distributed.initialize='yes'; valid: auto, always, never"),
    ('optimizer.name', 'lamb', "optimizer.name='lamb'; valid: sgd, adam"),
    ('strategy', 'thrice', "strategy='thrice'; valid: twice, conventional"),
    ('eval_crops', 2, 'eval_crops=2; valid: 1, 3'),
    ('eval_clips', 0, 'eval_clips=0 must be at least 1'),
    ('eval_short_side', 48, 'eval_short_side=48 must be at least image_size=64'),
    ('seed', -1, 'seed=-1 must be at least 0'),
    ('data_workers', -2, 'data_workers=-2 must be at least -1'),
    ('accumulation_steps', 3,
     'batch_size=8 must be a multiple of accumulation_steps=3'),
])
def test_each_bad_value_names_the_key_and_the_allowed_values(key, value, message):
  with pytest.raises(errors.ConfigError) as failure:
    config_checks.check_config(config_with(**{key: value}))
  assert message in str(failure.value)


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


def test_batch_that_does_not_split_over_devices_says_what_to_set(monkeypatch):
  monkeypatch.setattr(jax, 'device_count', lambda: 3)
  with pytest.raises(errors.ConfigError, match='set --config.batch_size to a multiple of 3'):
    config_checks.check_devices(synthetic.get_config())


def test_eval_batch_that_does_not_split_over_devices_says_what_to_set(monkeypatch):
  config = synthetic.get_config()
  config.batch_size, config.eval_batch_size = 8, 20
  monkeypatch.setattr(jax, 'device_count', lambda: 8)
  with pytest.raises(errors.ConfigError, match='eval_batch_size=20 does not divide '
                     'over 8 devices; set --config.eval_batch_size to a multiple of 8'):
    config_checks.check_devices(config)
