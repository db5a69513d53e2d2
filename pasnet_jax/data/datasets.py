"""Finding, checking and building the TFDS dataset a config names.

`load_dataset(config.dataset)` is what training and evaluation start from:
the prepared dataset (built first if missing and allowed), its class names
and the training split's size, with one DatasetError line for a wrong name,
a missing build or a missing split. A prepared dataset is found and read
without TensorFlow (`records`); only building one constructs a TFDS builder,
which imports it. `load_builder` gives the builder of a prepared dataset by
name, for its TFDS metadata.
"""

import dataclasses
import pathlib

from absl import logging
import jax
import ml_collections
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

import pasnet_jax.data  # pylint: disable=unused-import  # registers the builders
from pasnet_jax import parallel
from pasnet_jax.data import records
from pasnet_jax.errors import DatasetError


@dataclasses.dataclass
class DatasetInfo:
  prepared: records.PreparedDataset
  class_names: list[str]
  num_train_examples: int

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _version_directory(dataset_config: ml_collections.ConfigDict
                       ) -> pathlib.Path:
  """Where TFDS keeps (or will keep) the dataset the config names."""
  try:
    builder_class = tfds.builder_cls(dataset_config.name)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise DatasetError(
        f'Unknown dataset {dataset_config.name!r}: set --config.dataset.name '
        'to ucf101_frames, hmdb51_frames or synthetic_actions.') from error
  config = dataset_config.config or (
      builder_class.BUILDER_CONFIGS[0].name if builder_class.BUILDER_CONFIGS
      else '')
  root = pathlib.Path(dataset_config.data_dir or constants.DATA_DIR).expanduser()
  return root / dataset_config.name / config / str(builder_class.VERSION)


def _build(name: str, dataset_config: ml_collections.ConfigDict) -> None:
  """Builds the dataset with TFDS (process 0; the others wait)."""
  data_dir = dataset_config.data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except ValueError as error:
    raise DatasetError(f'Unknown dataset config {name!r} ({error}); set '
                       '--config.dataset.config.') from error
  if not dataset_config.build:
    raise DatasetError(f'{name} is not built in {builder.data_dir_root}; '
                       'build it (README, "Datasets") or set '
                       '--config.dataset.build=True.')
  if jax.process_index() == 0:
    logging.info('Building %s in %s', name, builder.data_dir_root)
    download_config = tfds.download.DownloadConfig(
        manual_dir=dataset_config.manual_dir or None)
    builder.download_and_prepare(download_config=download_config)
  parallel.sync(f'built {name}')


def load_dataset(dataset_config: ml_collections.ConfigDict) -> DatasetInfo:
  """The prepared dataset of the config, built first if missing and allowed.

  With several processes, process 0 builds while the others wait.
  """
  name = dataset_config.name
  if dataset_config.config:
    name = f'{name}/{dataset_config.config}'
  directory = _version_directory(dataset_config)
  if not (directory / 'dataset_info.json').exists():
    _build(name, dataset_config)
  prepared = records.prepared_dataset(directory)
  for split in (dataset_config.train_split, dataset_config.eval_split):
    if split not in prepared.split_sizes:
      raise DatasetError(f'{name} has no split {split!r}; it has '
                         + ', '.join(prepared.split_sizes))
  return DatasetInfo(
      prepared=prepared, class_names=prepared.class_names,
      num_train_examples=prepared.split_sizes[dataset_config.train_split])


def load_builder(dataset, data_dir: str | None = None
                 ) -> tfds.core.DatasetBuilder:
  """A prepared TFDS builder from a builder or a name ('ucf101_frames/split1')."""
  if isinstance(dataset, tfds.core.DatasetBuilder):
    builder = dataset
  else:
    try:
      builder = tfds.builder(dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise DatasetError(f'Unknown dataset {dataset!r} ({e}).') from e
  if not builder.is_prepared():
    raise DatasetError(
        f'{builder.info.full_name} is not prepared in {builder.data_dir_root}: '
        'build it first (see the README, "Datasets").')
  return builder
