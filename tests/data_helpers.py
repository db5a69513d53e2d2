"""Small real-format inputs for the data tests: RAR archives, videos, splits.

RAR4 archives are written here with stored (uncompressed) members, which
rarfile, bsdtar and unrar-free all read; no RAR packer is needed.
"""

import io
import pathlib
import struct
import zipfile
import zlib

import av
import numpy as np

from pasnet_jax.data import records
from pasnet_jax.data import splits

_RAR4_MARKER = b'Rar!\x1a\x07\x00'
_MAIN_HEADER, _FILE_HEADER, _END_BLOCK = 0x73, 0x74, 0x7b
_LONG_BLOCK = 0x8000   # the header is followed by PACK_SIZE bytes of data
_STORED = 0x30
_HOST_WIN32 = 2
_ATTR_ARCHIVE = 0x20
# 2012-01-01 00:00:00 as an MS-DOS date and time.
_DOS_TIME = ((2012 - 1980) << 25) | (1 << 21) | (1 << 16)


def _block(head_type: int, flags: int, body: bytes) -> bytes:
  """A RAR4 block header: its CRC is the low 16 bits of the CRC32 of the
  header from HEAD_TYPE on."""
  header = struct.pack('<BHH', head_type, flags, 7 + len(body)) + body
  return struct.pack('<H', zlib.crc32(header) & 0xFFFF) + header


def rar4_bytes(files: dict[str, bytes]) -> bytes:
  """A RAR 4 archive holding `files` ({'dir/name': data}) stored."""
  out = [_RAR4_MARKER, _block(_MAIN_HEADER, 0, bytes(6))]
  for name, data in files.items():
    encoded = name.replace('/', '\\').encode('ascii')
    body = struct.pack('<IIBIIBBHI', len(data), len(data), _HOST_WIN32,
                       zlib.crc32(data), _DOS_TIME, 20, _STORED, len(encoded),
                       _ATTR_ARCHIVE) + encoded
    out += [_block(_FILE_HEADER, _LONG_BLOCK, body), data]
  out.append(_block(_END_BLOCK, 0x4000, b''))
  return b''.join(out)


def write_rar4(path: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
  path.write_bytes(rar4_bytes(files))
  return path


def write_zip(path: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
  with zipfile.ZipFile(path, 'w') as archive:
    for name, data in files.items():
      archive.writestr(name, data)
  return path


def video_bytes(num_frames: int, width: int = 32, height: int = 24,
                fps: int = 25, codec: str = 'mpeg4', seed: int = 0) -> bytes:
  """An AVI of `num_frames` frames with a moving square on a gradient.

  Frame i carries its index in the mean brightness of its top-left corner
  (i * 8 % 256), so tests can tell which frames came through.
  """
  rng = np.random.default_rng(seed)
  buffer = io.BytesIO()
  with av.open(buffer, 'w', format='avi') as container:
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    # Intra-only and high quality, so frame contents survive the round trip.
    stream.codec_context.gop_size = 1
    stream.codec_context.qmax = 2
    base = rng.integers(0, 255, size=3, dtype=np.uint8)
    for i in range(num_frames):
      image = np.empty((height, width, 3), np.uint8)
      image[:] = base
      image[:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None]
      side = max(2, min(width, height) // 4)
      x = i % max(1, width - side)
      image[height // 2:height // 2 + side, x:x + side] = 255
      image[:8, :8] = i * 8 % 256
      encode_frame(container, stream, image, 'rgb24')
    encode_frame(container, stream, None, 'rgb24')
  return buffer.getvalue()


def encode_frame(container, stream, image: np.ndarray | None,
                 frame_format: str) -> None:
  """Encodes and muxes one frame; None flushes the encoder."""
  frame = (None if image is None else
           av.VideoFrame.from_ndarray(image, format=frame_format))
  for packet in stream.encode(frame):
    container.mux(packet)


def truncated(data: bytes) -> bytes:
  """The first half of an encoded video, as an interrupted download leaves it."""
  return data[:len(data) // 2]


def crlf(lines: list[str]) -> bytes:
  """Split-file text as published: CRLF line ends."""
  return ''.join(line + '\r\n' for line in lines).encode('ascii')


def ucf101_class_index() -> bytes:
  return crlf([f'{i + 1} {name}'
               for i, name in enumerate(splits.UCF101_CLASSES)])


def ucf101_label(class_name: str) -> int:
  return splits.UCF101_CLASSES.index(class_name)


def ucf101_split_files(train: list[str], test: list[str], split_number: int = 1
                       ) -> dict[str, bytes]:
  """ucfTrainTestlist/ members for paths like 'Class/v_Class_g01_c01.avi'."""
  def labelled(path):
    return f'{path} {ucf101_label(path.split("/")[0]) + 1}'
  folder = 'ucfTrainTestlist/'
  return {
      folder + 'classInd.txt': ucf101_class_index(),
      folder + f'trainlist{split_number:02d}.txt': crlf(
          [labelled(p) for p in train]),
      folder + f'testlist{split_number:02d}.txt': crlf(test),
  }


def hmdb51_split_files(codes: dict[str, dict[str, int]], split_number: int = 1
                       ) -> dict[str, bytes]:
  """testTrainMulti_7030_splits/ members: {class: {video file: 0|1|2}}.

  Classes not in `codes` get an empty file, as the builder needs all 51.
  """
  folder = 'testTrainMulti_7030_splits/'
  return {
      f'{folder}{name}_test_split{split_number}.txt': crlf(
          [f'{video} {code} ' for video, code in codes.get(name, {}).items()])
      for name in splits.HMDB51_CLASSES
  }


def prepare(name: str, manual_dir: pathlib.Path, data_dir: pathlib.Path):
  """Builds dataset `name` as a user would, and returns its builder."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import pasnet_jax.data  # pylint: disable=g-import-not-at-top,unused-import
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder


def examples(builder, split: str) -> dict[str, dict]:
  """{name: example} of a built split as the input pipeline reads it: the
  video's frames decoded, its label, num_frames and fps."""
  from pasnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  reader = records.SplitReader(records.prepared_dataset(builder), split)
  table = reader.videos
  result = {}
  for index, name in enumerate(table.names):
    jpegs, label = reader.clip(index, range(table.num_frames[index]))
    result[name] = {
        'video': pipeline.decode_frames(jpegs, name), 'label': label,
        'num_frames': int(table.num_frames[index]),
        'fps': float(table.fps[index])}
  return result


def split_sizes(builder) -> dict[str, int]:
  """Videos per split of a built dataset."""
  return records.prepared_dataset(builder).split_sizes


def frame_marks(video: np.ndarray) -> list[int]:
  """The frame indices video_bytes() drew into the top-left corners."""
  return [int(round(frame[1:3, 1:3].mean() / 8)) for frame in video]
