"""Reading a prepared dataset's records without TensorFlow.

A TFDS builder imports TensorFlow as soon as it is constructed (even
`tfds.builder_from_directory` does), although `import tensorflow_datasets`
alone does not. So the read path finds a prepared dataset from TFDS's folder
layout, <data_dir>/<name>/<config>/<version>/, reads the split sizes from
the dataset_info.json TFDS writes there and the class names from
label.labels.txt, reads records by index from the ArrayRecord files, and
finds the frames and the label in the serialized tf.train.Example itself
(parse_video_example).

Builders stay in use for building; here only their classes are looked up
(for the default config and the version), which does not import TensorFlow.
"""

import dataclasses
import json
import pathlib

from array_record.python import array_record_data_source
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

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
      raise DatasetError(f'{self.record_description(index)} cannot be read '
                         f'({e}); build the dataset again.') from e

  def record_description(self, index: int) -> str:
    return f'Record {index} of {self.description}'

  def video_example(self, index: int) -> tuple[list[memoryview], int]:
    """(JPEG frames, label) of record `index` (parse_video_example)."""
    return parse_video_example(self.read(index),
                               self.record_description(index))


def parse_video_example(record: bytes, description: str
                        ) -> tuple[list[memoryview], int]:
  """(JPEG frames, label) of a serialized example of `frame_features`.

  The frames are views into `record`, found by walking the protobuf wire
  format of tf.train.Example: the protobuf classes' parse copied each of a
  video's frames into its own bytes object (1.9 ms of a K = 16 clip's 17 at
  175 frames, benchmarks/input.py), of which a clip decodes K.
  """
  try:
    frames, labels = _video_and_labels(record)
  except ValueError as e:
    raise DatasetError(f'{description} is damaged ({e}); build the dataset '
                       'again.') from e
  if not frames or len(labels) != 1:
    raise DatasetError(f'{description} is damaged: it has {len(frames)} frames '
                       f'and {len(labels)} labels; build the dataset again.')
  return frames, labels[0]


# Protobuf wire types.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
  """(value, position after it) of the varint at `pos`."""
  value = shift = 0
  while True:
    if pos >= end or shift > 63:
      raise ValueError(f'a varint at byte {pos} runs past its field')
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value, pos
    shift += 7


def _fields(data: bytes, start: int, end: int):
  """Yields (field number, wire type, value) of the message in
  data[start:end]; a length-delimited value is its (start, end), a varint
  its integer, a fixed-size one None."""
  pos = start
  while pos < end:
    key, pos = _varint(data, pos, end)
    number, wire_type = key >> 3, key & 7
    if wire_type == _VARINT:
      value, pos = _varint(data, pos, end)
    elif wire_type == _LENGTH_DELIMITED:
      length, pos = _varint(data, pos, end)
      value = (pos, pos + length)
      pos += length
    elif wire_type in (_FIXED64, _FIXED32):
      value = None
      pos += 8 if wire_type == _FIXED64 else 4
    else:
      raise ValueError(f'field {number} has wire type {wire_type}')
    if pos > end:
      raise ValueError(f'field {number} runs past the end of its message')
    yield number, wire_type, value


def _submessages(data: bytes, span: tuple[int, int], number: int):
  """Spans of the length-delimited fields `number` in the message at span."""
  for field, wire_type, value in _fields(data, *span):
    if field == number and wire_type == _LENGTH_DELIMITED:
      yield value


def _video_and_labels(record: bytes) -> tuple[list[memoryview], list[int]]:
  """Example.features.feature['video'].bytes_list.value and
  ['label'].int64_list.value; a missing feature is empty, as in protobuf."""
  whole = (0, len(record))
  wanted = {b'video': None, b'label': None}
  # Example.features (1) -> Features.feature (1), a map entry: key (1),
  # value (2). Of a repeated key, as of a repeated message, the last counts.
  for features in _submessages(record, whole, 1):
    for entry in _submessages(record, features, 1):
      key = value = None
      for field, wire_type, span in _fields(record, *entry):
        if wire_type == _LENGTH_DELIMITED and field == 1:
          key = record[span[0]:span[1]]
        elif wire_type == _LENGTH_DELIMITED and field == 2:
          value = span
      if key in wanted:
        wanted[key] = value
  view = memoryview(record)
  frames, labels = [], []
  if wanted[b'video'] is not None:
    # Feature.bytes_list (1) -> BytesList.value (1).
    for bytes_list in _submessages(record, wanted[b'video'], 1):
      frames += [view[start:end]
                 for start, end in _submessages(record, bytes_list, 1)]
  if wanted[b'label'] is not None:
    # Feature.int64_list (3) -> Int64List.value (1), packed or not.
    for int64_list in _submessages(record, wanted[b'label'], 3):
      for field, wire_type, value in _fields(record, *int64_list):
        if field == 1 and wire_type == _VARINT:
          labels.append(value)
        elif field == 1 and wire_type == _LENGTH_DELIMITED:
          pos, end = value
          while pos < end:
            label, pos = _varint(record, pos, end)
            labels.append(label)
  # int64 is two's complement in 64 bits.
  return frames, [v - (1 << 64) if v >= 1 << 63 else v for v in labels]
