"""A workdir holds one run: another config's resume is refused naming the
keys and how to set them, and an unwritable one is one clear error."""

import json

import pytest

from pasnet_jax import checkpoints
from pasnet_jax import errors
from pasnet_jax import train
from pasnet_jax import workdir as workdir_lib
from tests import run_helpers


def test_a_workdir_of_another_config_is_refused(uninterrupted, tiny_dataset):
  with pytest.raises(errors.TrainingError, match="model.fusion='A'"):
    train.train_and_evaluate(
        run_helpers.small_config(**{'model.fusion': 'A+pool(I)'}),
        uninterrupted[0], tiny_dataset)


def test_unwritable_workdir_is_a_clear_error(tmp_path, tiny_dataset):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(errors.TrainingError, match=r'Cannot write to workdir .*a_file/run'):
    train.train_and_evaluate(run_helpers.small_config(), str(blocker / 'run'),
                             tiny_dataset)


def test_claiming_a_workdir_records_the_run_and_refuses_another(tmp_path):
  config = run_helpers.small_config()
  workdir_lib.claim_workdir(config, str(tmp_path), 10)
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['model']['fusion'] == 'A'
  assert checkpoints.read_format(str(tmp_path))['num_classes'] == 10
  # The same run again is welcome.
  workdir_lib.claim_workdir(config, str(tmp_path), 10)
  other = run_helpers.small_config(**{'model.bn_policy': 'frozen'})
  with pytest.raises(errors.TrainingError) as failure:
    workdir_lib.claim_workdir(other, str(tmp_path), 7)
  message = str(failure.value)
  assert "model.bn_policy='trainable', num_classes=10" in message
  assert '--config.model.bn_policy=trainable' in message
  assert 'use its dataset (10 classes)' in message


def test_final_stage_dir_is_stage2_for_twice_finetune(tmp_path):
  assert workdir_lib.final_stage_dir(str(tmp_path)) == str(tmp_path)
  (tmp_path / 'stage2').mkdir()
  assert workdir_lib.final_stage_dir(str(tmp_path)) == str(tmp_path / 'stage2')
