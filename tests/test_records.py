"""The wire-format reading of a frame example against protobuf's own."""

import numpy as np
import pytest
from tensorflow_datasets.proto import tf_example_pb2

from pasnet_jax.data import records
from pasnet_jax.errors import DatasetError


def _example(images, frames, **extra_bytes) -> bytes:
  example = tf_example_pb2.Example()
  feature = example.features.feature
  feature['name'].bytes_list.value.append(b'v_Knitting_g01_c01')
  feature['label'].int64_list.value.append(7)
  feature['image'].bytes_list.value.extend(images)
  feature['frame'].int64_list.value.extend(frames)
  for key, value in extra_bytes.items():
    feature[key].bytes_list.value.append(value)
  return example.SerializeToString()


def _length_delimited(field: int, payload: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
  out = bytearray()
  while value >= 0x80:
    out.append(value & 0x7F | 0x80)
    value >>= 7
  return bytes(out + bytes([value]))


def _protobufs(record: bytes):
  feature = tf_example_pb2.Example.FromString(record).features.feature
  return (list(feature['image'].bytes_list.value),
          list(feature['frame'].int64_list.value))


@pytest.mark.parametrize('image, frame', [
    (b'\xff\xd8' + bytes(range(256)) * 3, 7),
    (b'', 0),
    (b'x' * 70000, 1_000_000),
])
def test_image_and_frame_are_what_protobuf_reads(image, frame):
  record = _example([image], [frame], big=b'y' * 200)
  jpeg, parsed_frame = records.parse_frame_example(record, 'Record 3')
  assert [bytes(jpeg)] == _protobufs(record)[0] == [image]
  assert parsed_frame == frame


def test_frame_indices_stored_unpacked_are_read():
  # Protobuf writes int64 lists packed but reads them either way. An
  # Example with the frame as one varint field (Int64List.value, 1), in
  # Feature.int64_list (3) of the map entry 'frame' of Features.feature (1)
  # of Example.features (1); appended, it replaces the first frame index.
  int64_list = _varint(1 << 3) + _varint(42)
  entry = (_length_delimited(1, b'frame')
           + _length_delimited(2, _length_delimited(3, int64_list)))
  record = _example([b'a'], [7]) + _length_delimited(
      1, _length_delimited(1, entry))
  assert _protobufs(record)[1] == [42]
  assert records.parse_frame_example(record, 'Record 3')[1] == 42


def test_random_examples_agree_with_protobuf():
  rng = np.random.default_rng(0)
  for _ in range(50):
    image = rng.bytes(int(rng.integers(0, 2000)))
    frame = int(rng.integers(0, 1 << 40))
    record = _example([image], [frame], other=rng.bytes(50))
    jpeg, parsed = records.parse_frame_example(record, 'Record 0')
    assert ([bytes(jpeg)], [parsed]) == _protobufs(record)


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'no image',
                                    'two frame indices'])
def test_damaged_examples_are_dataset_errors_naming_the_record(damage):
  record = _example([b'\xff\xd8' * 100], [3])
  if damage == 'truncated':
    record = record[:len(record) - 50]
  elif damage == 'garbage':
    record = bytes([0x0f]) + record  # field 1 with wire type 7
  elif damage == 'no image':
    record = _example([], [3])
  else:
    record = _example([b'a'], [3, 4])
  with pytest.raises(DatasetError, match='Record 12 of the split is damaged'):
    records.parse_frame_example(record, 'Record 12 of the split')
