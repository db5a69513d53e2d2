"""Reading a prepared dataset's records without TensorFlow.

A TFDS builder imports TensorFlow as soon as it is constructed (even
`tfds.builder_from_directory` does), although `import tensorflow_datasets`
alone does not. So the read path finds a prepared dataset from TFDS's folder
layout, <data_dir>/<name>/<config>/<version>/, reads the split files from
the dataset_info.json TFDS writes there, the videos of each split from
metadata.json (the builders' table, frames_builder.frame_examples) and the
class names from label.labels.txt, reads a clip's frame records by index
from the ArrayRecord files, and finds the JPEG in the serialized
tf.train.Example itself (parse_frame_example).

Builders stay in use for building; here only their classes are looked up
(for the default config and the version), which does not import TensorFlow.
"""

import bisect
import collections
import dataclasses
import json
import pathlib

from array_record.python import array_record_module
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

from pasnet_jax.data.errors import DatasetError


@dataclasses.dataclass(frozen=True)
class VideoTable:
  """The videos of a split, in the order of their frames' records."""
  names: tuple[str, ...]
  labels: np.ndarray       # (videos,) int64
  num_frames: np.ndarray   # (videos,) int64
  fps: np.ndarray          # (videos,) float32
  first_frame: np.ndarray  # (videos,) int64: the index of its first record

  def __len__(self) -> int:
    return len(self.names)


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
  """A dataset TFDS has built: where it is and what its splits hold."""
  name: str                    # 'ucf101_frames/split1/2.0.0'
  directory: pathlib.Path      # the version folder
  videos: dict[str, VideoTable]
  split_files: dict[str, list[pathlib.Path]]  # ArrayRecord shards, in order
  class_names: list[str]

  @property
  def split_sizes(self) -> dict[str, int]:
    """Videos per split."""
    return {split: len(table) for split, table in self.videos.items()}

  def check_split(self, split: str) -> None:
    if split not in self.videos:
      raise DatasetError(f'{self.name} has no split {split!r}; it has '
                         f'{sorted(self.videos)}.')


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
  metadata_path = directory / 'metadata.json'
  metadata = (json.loads(metadata_path.read_text())
              if metadata_path.exists() else {})
  if 'videos' not in metadata:
    raise DatasetError(
        f'{directory} holds a record per video, as pasnet_jax wrote datasets '
        'before version 2.0.0 of its builders (a record per frame). Delete '
        'it and build the dataset again.')
  videos, split_files = {}, {}
  for split in info['splits']:
    name = split['name']
    lengths = [int(n) for n in split.get('shardLengths', [])]
    split_files[name] = [
        directory / _shard_file_name(split['filepathTemplate'], info['name'],
                                     name, i, len(lengths))
        for i in range(len(lengths))]
    videos[name] = _video_table(metadata['videos'].get(name), sum(lengths),
                                f'{metadata_path} (split {name!r})')
  labels = directory / 'label.labels.txt'
  class_names = labels.read_text().splitlines() if labels.exists() else []
  return PreparedDataset(full_name, directory, videos, split_files,
                         class_names)


def _video_table(columns: dict | None, num_records: int, description: str
                 ) -> VideoTable:
  """The VideoTable of a split's metadata columns, checked against the
  number of frame records its files hold."""
  try:
    num_frames = np.asarray(columns['num_frames'], np.int64)
    table = VideoTable(
        names=tuple(columns['name']),
        labels=np.asarray(columns['label'], np.int64), num_frames=num_frames,
        fps=np.asarray(columns['fps'], np.float32),
        first_frame=np.cumsum(num_frames) - num_frames)
  except (TypeError, KeyError, ValueError) as e:
    raise DatasetError(f'{description} is damaged ({e!r}); build the dataset '
                       'again.') from e
  lengths = {len(table.names), len(table.labels), len(table.num_frames),
             len(table.fps)}
  if (len(lengths) != 1 or (num_frames < 1).any()
      or num_frames.sum() != num_records):
    raise DatasetError(
        f'{description} is damaged: it does not list the {num_records} frame '
        'records of the split, one or more for each of its videos; build the '
        'dataset again.')
  return table


def _shard_file_name(template: str, dataset_name: str, split: str, shard: int,
                     num_shards: int) -> str:
  return (template.replace('{DATASET}', dataset_name)
          .replace('{SPLIT}', split).replace('{FILEFORMAT}', 'array_record')
          .replace('{SHARD_X_OF_Y}', f'{shard:05d}-of-{num_shards:05d}'))


class SplitReader:
  """The clips of one split's videos; picklable, so that each worker process
  opens its own file readers (lazily, on first read)."""

  def __init__(self, dataset: PreparedDataset, split: str):
    dataset.check_split(split)
    self.description = f'{dataset.name} split {split!r}'
    self.videos = dataset.videos[split]
    self._files = [str(p) for p in dataset.split_files[split]]
    self._readers = None
    # Opening reads each file's index: damage there stops the run here.
    counts = [reader.num_records() for reader in self._open()]
    self._shard_starts = np.cumsum([0] + counts).tolist()
    listed = int(self.videos.num_frames.sum())
    if sum(counts) != listed:
      raise DatasetError(
          f'The files of {self.description} hold {sum(counts)} records where '
          f'the dataset lists {listed} frames: they are damaged or from '
          'another build; build the dataset again.')

  def __getstate__(self) -> dict:
    return {**self.__dict__, '_readers': None}

  def _open(self) -> list:
    """This process's reader of each file."""
    if self._readers is None:
      try:
        # As ArrayRecordDataSource opens them for reading by index. Its
        # __getitems__ is not used: it starts a thread pool for every call,
        # which took 1.8 ms of CPU for a clip's 16 records against 0.18 ms
        # for one read() of the file's reader (benchmarks/input.py's data).
        self._readers = [array_record_module.ArrayRecordReader(
            file, options='readahead_buffer_size:0',
            file_reader_buffer_size=32768) for file in self._files]
      except (RuntimeError, ValueError, OSError) as e:
        raise DatasetError(f'The files of {self.description} cannot be read '
                           f'({e}); build the dataset again.') from e
    return self._readers

  def _read(self, keys: list[int]) -> list[bytes]:
    """The records `keys` of the split, in that order."""
    readers = self._open()
    by_file = collections.defaultdict(list)
    for i, key in enumerate(keys):
      file = bisect.bisect_right(self._shard_starts, key) - 1
      by_file[file].append((key - self._shard_starts[file], i))
    records = [b''] * len(keys)
    for file, positions in by_file.items():
      for record, (_, i) in zip(readers[file].read([p for p, _ in positions]),
                                positions):
        records[i] = record
    return records

  def __len__(self) -> int:
    return len(self.videos)

  def video_description(self, index: int) -> str:
    first = int(self.videos.first_frame[index])
    last = first + int(self.videos.num_frames[index]) - 1
    return (f'Video {self.videos.names[index]} (records {first} to {last}) '
            f'of {self.description}')

  def clip(self, index: int, frames) -> tuple[list[memoryview], int]:
    """(JPEGs of the frames `frames` of video `index`, its label); each of
    `frames` is below the video's num_frames."""
    first = int(self.videos.first_frame[index])
    keys = [first + int(frame) for frame in frames]
    try:
      records = self._read(keys)
    except (RuntimeError, ValueError, OSError) as e:
      raise DatasetError(f'{self.video_description(index)} cannot be read '
                         f'({e}); build the dataset again.') from e
    jpegs = []
    for key, frame, record in zip(keys, frames, records):
      description = (f'Record {key} (frame {frame} of video '
                     f'{self.videos.names[index]}) of {self.description}')
      jpeg, stored_frame = parse_frame_example(record, description)
      if stored_frame != frame:
        raise DatasetError(f'{description} is damaged: it holds frame '
                           f'{stored_frame}; build the dataset again.')
      jpegs.append(jpeg)
    return jpegs, int(self.videos.labels[index])


def parse_frame_example(record: bytes, description: str
                        ) -> tuple[memoryview, int]:
  """(JPEG, frame index) of a serialized frame example (frames_info).

  The JPEG is a view into `record`, found by walking the protobuf wire
  format of tf.train.Example, which needs no TensorFlow and copies nothing.
  """
  try:
    features = _features(record, (b'image', b'frame'))
    jpegs = _bytes_values(record, features[b'image'])
    frames = _int64_values(record, features[b'frame'])
  except ValueError as e:
    raise DatasetError(f'{description} is damaged ({e}); build the dataset '
                       'again.') from e
  if len(jpegs) != 1 or len(frames) != 1:
    raise DatasetError(f'{description} is damaged: it has {len(jpegs)} '
                       f'images and {len(frames)} frame indices; build the '
                       'dataset again.')
  return jpegs[0], frames[0]


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


def _features(record: bytes, keys) -> dict[bytes, tuple[int, int] | None]:
  """{key: span of its Feature message, or None} of the tf.train.Example
  `record`, for `keys`."""
  found = dict.fromkeys(keys)
  # Example.features (1) -> Features.feature (1), a map entry: key (1),
  # value (2). Of a repeated key, as of a repeated message, the last counts.
  for features in _submessages(record, (0, len(record)), 1):
    for entry in _submessages(record, features, 1):
      key = value = None
      for field, wire_type, span in _fields(record, *entry):
        if wire_type == _LENGTH_DELIMITED and field == 1:
          key = record[span[0]:span[1]]
        elif wire_type == _LENGTH_DELIMITED and field == 2:
          value = span
      if key in found:
        found[key] = value
  return found


def _bytes_values(record: bytes, feature: tuple[int, int] | None
                  ) -> list[memoryview]:
  """Feature.bytes_list (1) -> BytesList.value (1); none if missing, as in
  protobuf."""
  if feature is None:
    return []
  view = memoryview(record)
  return [view[start:end]
          for bytes_list in _submessages(record, feature, 1)
          for start, end in _submessages(record, bytes_list, 1)]


def _int64_values(record: bytes, feature: tuple[int, int] | None
                  ) -> list[int]:
  """Feature.int64_list (3) -> Int64List.value (1), packed or not; none if
  missing, as in protobuf."""
  values = []
  for int64_list in (_submessages(record, feature, 3) if feature else ()):
    for field, wire_type, value in _fields(record, *int64_list):
      if field == 1 and wire_type == _VARINT:
        values.append(value)
      elif field == 1 and wire_type == _LENGTH_DELIMITED:
        pos, end = value
        while pos < end:
          number, pos = _varint(record, pos, end)
          values.append(number)
  # int64 is two's complement in 64 bits.
  return [v - (1 << 64) if v >= 1 << 63 else v for v in values]
