"""The wire-format reading of a video example against protobuf's own."""

import numpy as np
import pytest
from tensorflow_datasets.proto import tf_example_pb2

from pasnet_jax.data import records
from pasnet_jax.errors import DatasetError


def _example(frames, labels, **extra_bytes) -> bytes:
  example = tf_example_pb2.Example()
  feature = example.features.feature
  feature['name'].bytes_list.value.append(b'v_Knitting_g01_c01')
  feature['fps'].float_list.value.append(25.0)
  feature['video'].bytes_list.value.extend(frames)
  feature['label'].int64_list.value.extend(labels)
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
  return (list(feature['video'].bytes_list.value),
          list(feature['label'].int64_list.value))


@pytest.mark.parametrize('frames, label', [
    ([b'\xff\xd8' + bytes(range(256)) * 3, b'', b'\xff\xd8\x00'], 7),
    ([bytes([i]) * (1 + 300 * i) for i in range(5)], 100),
    ([b'x' * 70000], 0),
])
def test_frames_and_label_are_what_protobuf_reads(frames, label):
  record = _example(frames, [label], big=b'y' * 200)
  jpegs, parsed_label = records.parse_video_example(record, 'Record 3')
  assert [bytes(j) for j in jpegs] == _protobufs(record)[0] == frames
  assert parsed_label == label


def test_labels_stored_unpacked_are_read():
  # Protobuf writes int64 lists packed but reads them either way. An
  # Example with the label as one varint field (Int64List.value, 1), in
  # Feature.int64_list (3) of the map entry 'label' of Features.feature (1)
  # of Example.features (1); appended, it replaces the first label.
  int64_list = _varint(1 << 3) + _varint(42)
  entry = (_length_delimited(1, b'label')
           + _length_delimited(2, _length_delimited(3, int64_list)))
  record = _example([b'a', b'b'], [7]) + _length_delimited(
      1, _length_delimited(1, entry))
  assert _protobufs(record)[1] == [42]
  assert records.parse_video_example(record, 'Record 3')[1] == 42


def test_random_examples_agree_with_protobuf():
  rng = np.random.default_rng(0)
  for _ in range(50):
    frames = [rng.bytes(int(n)) for n in rng.integers(0, 2000, rng.integers(1, 9))]
    label = int(rng.integers(0, 101))
    record = _example(frames, [label])
    jpegs, parsed = records.parse_video_example(record, 'Record 0')
    assert ([bytes(j) for j in jpegs], [parsed]) == _protobufs(record)


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'no video',
                                    'two labels'])
def test_damaged_examples_are_dataset_errors_naming_the_record(damage):
  record = _example([b'\xff\xd8' * 100, b'\xff\xd8' * 90], [3])
  if damage == 'truncated':
    record = record[:len(record) - 50]
  elif damage == 'garbage':
    record = bytes([0x0f]) + record  # field 1 with wire type 7
  elif damage == 'no video':
    record = _example([], [3])
  else:
    record = _example([b'a'], [3, 4])
  with pytest.raises(DatasetError, match='Record 12 of the split is damaged'):
    records.parse_video_example(record, 'Record 12 of the split')
