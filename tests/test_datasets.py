"""Finding and checking the dataset a config names: one DatasetError line
for a wrong name or config, a missing build, or a missing split."""

import ml_collections
import pytest

from pasnet_jax.data import datasets
from pasnet_jax.errors import DatasetError


def dataset_config(data_dir, **changes):
  config = ml_collections.ConfigDict({
      'name': 'synthetic_actions', 'config': '', 'data_dir': str(data_dir),
      'manual_dir': '', 'train_split': 'train', 'eval_split': 'test',
      'build': False})
  config.update(changes)
  return config


def test_an_unknown_dataset_names_the_ones_there_are(tmp_path):
  with pytest.raises(DatasetError, match="Unknown dataset 'ucf102_frames': set "
                     '--config.dataset.name to ucf101_frames, hmdb51_frames or '
                     'synthetic_actions'):
    datasets.load_dataset(dataset_config(tmp_path, name='ucf102_frames'))


def test_an_unknown_dataset_config_names_the_key(tmp_path):
  with pytest.raises(DatasetError, match=r"Unknown dataset config "
                     r"'synthetic_actions/split9'.*--config.dataset.config"):
    datasets.load_dataset(dataset_config(tmp_path, config='split9'))


def test_a_dataset_not_built_says_how_to_build_it(tmp_path):
  with pytest.raises(DatasetError, match='synthetic_actions is not built in '
                     f'{tmp_path}.*--config.dataset.build=True'):
    datasets.load_dataset(dataset_config(tmp_path))
  with pytest.raises(DatasetError, match='is not prepared'):
    datasets.load_builder('synthetic_actions', str(tmp_path))


def test_the_dataset_and_its_splits(tiny_dataset):
  # The tiny config is not registered: its folder is found all the same.
  root = tiny_dataset.prepared.directory.parents[2]
  info = datasets.load_dataset(dataset_config(root, config='tiny'))
  assert info.class_names == tiny_dataset.class_names
  assert info.num_classes == 10
  assert info.num_train_examples == tiny_dataset.num_train_examples
  with pytest.raises(DatasetError, match="has no split 'validation'; it has "):
    datasets.load_dataset(dataset_config(root, config='tiny',
                                         eval_split='validation'))
