"""Decoding videos with PyAV (FFmpeg): whole videos to frames, or to JPEGs.

What is done with unusual videos, the same for the dataset builders and
`predict`:
  * Any frame size, odd ones (33 x 17) included, and any pixel format,
    grayscale included: every frame is converted to RGB and resized so that
    its short side is 256 (the stored size; `predict` uses the config's
    eval_short_side).
  * Huge frames (4000 x 3000): each frame is resized as soon as it is
    decoded, so memory holds one full-size frame at a time.
  * Fewer frames than a clip needs, down to one: used; sampling repeats
    frames in order (see sampling.py).
  * Long videos: the builders store every frame; `predict` keeps only the K
    it samples (decode_video's `indices`).
  * Frames more elongated than MAX_ASPECT_RATIO: refused, as a damaged header
    most likely declares such a size.
  * Empty, truncated (fewer frames decode than the header declares) or not a
    video: refused with a VideoDecodeError (a DatasetError) naming the file;
    the builders list it in the failure report, `predict` prints it.

This module imports neither TensorFlow nor JAX, so that the worker processes
that decode videos while a dataset is built start quickly; it imports PyAV
only when it decodes, so that training and evaluation, which read stored
JPEGs, run where PyAV is not installed.
"""

import io
import os
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

import numpy as np

from pasnet_jax.errors import DatasetError

if TYPE_CHECKING:
  import av

# Frames are stored with their short side at this size; the paper's 256 x 340
# input (for 4:3 videos) is then a crop away.
STORED_SHORT_SIDE = 256
JPEG_QUALITY = 90
# A file cut short can end on whole frames and decode without an error; it
# shows as fewer frames than its header declares. Encoders may declare a few
# frames that decode to nothing (Xvid's packed B-frames), hence the margin.
MIN_DECLARED_FRACTION = 0.9
# Long side over short side. A frame beyond it resized to the short side
# would not fit in a JPEG (65,500 pixels at most) or in memory.
MAX_ASPECT_RATIO = 8


class VideoDecodeError(DatasetError):
  """A video that cannot be decoded; `reason` says why, without the path."""

  def __init__(self, reason: str, path: str | None = None):
    self.reason = reason
    message = reason if path is None else (
        f'Cannot decode {path}: {reason}. Check that it is a complete video '
        f'file that FFmpeg can read (e.g. `ffprobe {path}`).')
    super().__init__(message)


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) with the short side at `short_side`, aspect kept."""
  if height <= width:
    return short_side, max(1, round(width * short_side / height))
  return max(1, round(height * short_side / width)), short_side


def _ffmpeg_message(error: Exception) -> str:
  # PyAV's str() carries the errno and a placeholder file name; the FFmpeg
  # text alone is what a reader needs.
  return getattr(error, 'strerror', None) or str(error)


def _decoded_frames(source, short_side: int | None,
                    wanted: Collection[int] | None = None
                    ) -> tuple[Iterator[tuple[int, 'av.VideoFrame']], float]:
  """Iterator over (index, frame as RGB, resized if `short_side`); and fps.

  Only the frames whose index is in `wanted` (all if None) are converted;
  the others come as (index, None). All are decoded, so that damage anywhere
  is found.

  Decoding stays single-threaded: FFmpeg's frame threads swallow the error
  at the cut of a truncated file, which would then pass as a short video.
  """
  import av  # pylint: disable=g-import-not-at-top,redefined-outer-name
  # What PyAV raises for a damaged file: FFmpeg's errors, and a
  # UnicodeDecodeError for metadata that is not UTF-8.
  decoder_errors = (av.FFmpegError, OSError, UnicodeDecodeError)
  try:
    container = av.open(source)
  except decoder_errors as e:
    raise VideoDecodeError(f'not a readable video ({_ffmpeg_message(e)})') from e
  if not container.streams.video:
    container.close()
    raise VideoDecodeError('the file has no video stream')
  stream = container.streams.video[0]
  declared = stream.frames
  rate = stream.average_rate or stream.guessed_rate
  fps = float(rate) if rate else 0.0

  def frames():
    size = None
    count = 0
    with container:
      try:
        for frame in container.decode(stream):
          if size is None:
            _check_aspect(frame.height, frame.width)
            size = ((frame.height, frame.width) if short_side is None else
                    resized_shape(frame.height, frame.width, short_side))
          if wanted is None or count in wanted:
            # swscale resizes and converts in one pass, outside the GIL.
            yield count, frame.reformat(width=size[1], height=size[0],
                                        format='rgb24', interpolation='AREA')
          else:
            yield count, None
          count += 1
      except decoder_errors as e:
        raise VideoDecodeError(f'decoding failed after {count} frames '
                               f'({_ffmpeg_message(e)})') from e
    if count == 0:
      raise VideoDecodeError('no frame could be decoded')
    if count < MIN_DECLARED_FRACTION * declared:
      raise VideoDecodeError(f'truncated: {count} of the {declared} frames '
                             'its header declares could be decoded')

  return frames(), fps


def _check_aspect(height: int, width: int):
  if max(height, width) > MAX_ASPECT_RATIO * min(height, width):
    raise VideoDecodeError(f'frames of {width} x {height} pixels are more '
                           f'elongated than {MAX_ASPECT_RATIO}:1 (a damaged '
                           'header?)')


def _checked_path(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DatasetError(f'{path} does not exist or is not a file.')
  if os.path.getsize(path) == 0:
    raise VideoDecodeError('the file is empty (0 bytes)', path)
  return path


def count_frames(path: str | os.PathLike) -> int:
  """How many frames of a video file decode; checked as decode_video checks.

  Raises:
    VideoDecodeError (a DatasetError) naming the file and the reason.
  """
  path = _checked_path(path)
  try:
    frames, _ = _decoded_frames(path, None, wanted=())
    return sum(1 for _ in frames)
  except VideoDecodeError as e:
    raise VideoDecodeError(e.reason, path) from e


def decode_video(path: str | os.PathLike, short_side: int | None = None,
                 indices=None) -> tuple[np.ndarray, float]:
  """The frames of a video file as uint8 (N, H, W, 3) RGB, and its fps.

  Args:
    path: a video file FFmpeg can read.
    short_side: if given, frames are resized so that their short side has
      this many pixels (aspect kept), which bounds the memory long videos need.
    indices: if given, only these frames, in this order (an index may
      repeat), so that a few frames of a long video need memory for those
      only; count_frames says how many there are. All frames otherwise.

  Raises:
    VideoDecodeError (a DatasetError) naming the file and the reason.
  """
  path = _checked_path(path)
  wanted = None if indices is None else {int(i) for i in indices}
  try:
    frames, fps = _decoded_frames(path, short_side, wanted)
    kept, num_frames = {}, 0
    for index, frame in frames:
      num_frames = index + 1
      if frame is not None:
        kept[index] = frame.to_ndarray()
  except VideoDecodeError as e:
    raise VideoDecodeError(e.reason, path) from e
  if indices is None:
    return np.stack(list(kept.values())), fps
  missing = wanted - kept.keys()
  if missing:
    raise VideoDecodeError(f'frame {max(missing)} was asked for, but '
                           f'{num_frames} frames decode', path)
  return np.stack([kept[int(i)] for i in indices]), fps


def video_to_jpegs(data: bytes, short_side: int = STORED_SHORT_SIDE,
                   quality: int = JPEG_QUALITY) -> tuple[list[bytes], float]:
  """JPEG-encoded frames of an encoded video, resized to `short_side`, and fps.

  Raises VideoDecodeError with the reason if the video cannot be used.
  """
  if not data:
    raise VideoDecodeError('the file is empty (0 bytes)')
  frames, fps = _decoded_frames(io.BytesIO(data), short_side)
  jpegs = []
  for _, frame in frames:
    buffer = io.BytesIO()
    frame.to_image().save(buffer, format='JPEG', quality=quality)
    jpegs.append(buffer.getvalue())
  return jpegs, fps
