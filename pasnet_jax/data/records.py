"""Reading a prepared dataset's records without TensorFlow.

A TFDS builder imports TensorFlow as soon as it is constructed (even
`tfds.builder_from_directory` does), although `import tensorflow_datasets`
alone does not. So the read path finds a prepared dataset from TFDS's folder
layout, <data_dir>/<name>/<config>/<version>/, reads the split sizes from
the dataset_info.json TFDS writes there and the class names from
label.labels.txt, reads records by index from the ArrayRecord files, and
parses the tf.train.Example protos with the proto classes TFDS ships for its
own NumPy reader.

Builders stay in use for building; here only their classes are looked up
(for the default config and the version), which does not import TensorFlow.
"""

import dataclasses
import json
import pathlib

from array_record.python import array_record_data_source
from google.protobuf import message
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants
from tensorflow_datasets.proto import tf_example_pb2

from pasnet_jax.data.errors import DatasetError


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
  """A dataset TFDS has built: where it is and what its splits hold."""
  name: str                    # 'ucf101_frames/split1/1.0.0'
  directory: pathlib.Path      # the version folder
  split_sizes: dict[str, int]  # examples per split
  split_files: dict[str, list[pathlib.Path]]  # ArrayRecord shards, in order
  class_names: list[str]

  def check_split(self, split: str) -> None:
    if split not in self.split_sizes:
      raise DatasetError(f'{self.name} has no split {split!r}; it has '
                         f'{sorted(self.split_sizes)}.')


def version_directory(name: str, data_dir: str | None) -> pathlib.Path:
  """<data_dir>/<name>/<config>/<version> as TFDS lays it out for
  'name', 'name/config' or 'name/config:version' of a registered config."""
  import pasnet_jax.data  # pylint: disable=g-import-not-at-top,unused-import  # registers the builders
  name, _, version = name.partition(':')
  dataset_name, _, config = name.partition('/')
  try:
    builder_class = tfds.builder_cls(dataset_name)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetError(f'Unknown dataset {dataset_name!r} ({e}).') from e
  configs = [c.name for c in builder_class.BUILDER_CONFIGS]
  if configs and not config:
    config = configs[0]
  if config and config not in configs:
    raise DatasetError(f'{dataset_name} has no config {config!r}; it has '
                       f'{configs}.')
  root = pathlib.Path(data_dir or constants.DATA_DIR).expanduser()
  return root / dataset_name / config / (version or str(builder_class.VERSION))


def prepared_dataset(dataset, data_dir: str | None = None) -> PreparedDataset:
  """The prepared dataset `dataset` names ('ucf101_frames/split1'), in its
  version folder (a pathlib.Path), or of a TFDS builder (its folder is used;
  nothing else of it). A PreparedDataset is returned as it is.

  Raises:
    DatasetError: unknown, not prepared, or not stored as ArrayRecord.
  """
  if isinstance(dataset, PreparedDataset):
    return dataset
  if isinstance(dataset, str):
    directory = version_directory(dataset, data_dir)
  elif isinstance(dataset, pathlib.Path):
    directory = dataset
  else:
    directory = pathlib.Path(dataset.data_dir)
  info_path = directory / 'dataset_info.json'
  if not info_path.exists():
    raise DatasetError(
        f'{dataset if isinstance(dataset, str) else directory} is not '
        f'prepared in {directory}: build it first (see the README, '
        '"Datasets").')
  info = json.loads(info_path.read_text())
  full_name = '/'.join(filter(None, (info['name'], info.get('configName'),
                                     info['version'])))
  if info.get('fileFormat') != 'array_record':
    raise DatasetError(
        f'{directory} holds {info.get("fileFormat", "tfrecord")} files, which '
        'cannot be read by index. Delete it and build again with '
        'file_format="array_record" (the default of the pasnet_jax '
        'builders).')
  split_sizes, split_files = {}, {}
  for split in info['splits']:
    lengths = [int(n) for n in split.get('shardLengths', [])]
    split_sizes[split['name']] = sum(lengths)
    split_files[split['name']] = [
        directory / _shard_file_name(split['filepathTemplate'], info['name'],
                                     split['name'], i, len(lengths))
        for i in range(len(lengths))]
  labels = directory / 'label.labels.txt'
  class_names = labels.read_text().splitlines() if labels.exists() else []
  return PreparedDataset(full_name, directory, split_sizes, split_files,
                         class_names)


def _shard_file_name(template: str, dataset_name: str, split: str, shard: int,
                     num_shards: int) -> str:
  return (template.replace('{DATASET}', dataset_name)
          .replace('{SPLIT}', split).replace('{FILEFORMAT}', 'array_record')
          .replace('{SHARD_X_OF_Y}', f'{shard:05d}-of-{num_shards:05d}'))


class SplitReader:
  """Serialized examples of one split by index; picklable, so that each
  worker process opens its own file readers (lazily, on first read)."""

  def __init__(self, dataset: PreparedDataset, split: str):
    dataset.check_split(split)
    self.description = f'{dataset.name} split {split!r}'
    self._size = dataset.split_sizes[split]
    self._source = (array_record_data_source.ArrayRecordDataSource(
        [str(p) for p in dataset.split_files[split]]) if self._size else None)

  def __len__(self) -> int:
    return self._size

  def read(self, index: int) -> bytes:
    try:
      return self._source[index]
    except (RuntimeError, ValueError, OSError) as e:
      raise DatasetError(f'Record {index} of {self.description} cannot be '
                         f'read ({e}); build the dataset again.') from e


def parse_video_example(record: bytes, description: str
                        ) -> tuple[list[bytes], int]:
  """(JPEG frames, label) of a serialized example of `frame_features`."""
  try:
    features = tf_example_pb2.Example.FromString(record).features.feature
  except message.DecodeError as e:
    raise DatasetError(f'{description} is damaged ({e}); build the dataset '
                       'again.') from e
  # A map of messages answers a missing key with an empty message.
  jpegs = list(features['video'].bytes_list.value)
  labels = features['label'].int64_list.value
  if not jpegs or len(labels) != 1:
    raise DatasetError(f'{description} is damaged: it has {len(jpegs)} frames '
                       f'and {len(labels)} labels; build the dataset again.')
  return jpegs, int(labels[0])
