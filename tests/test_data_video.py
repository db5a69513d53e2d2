"""Decoding videos with PyAV."""

import io

import numpy as np
import pytest
from PIL import Image

from pasnet_jax.data import video
from pasnet_jax.errors import DatasetError
from tests import data_helpers


def test_decode_video_gives_all_frames_and_fps(tmp_path):
  path = tmp_path / 'clip.avi'
  path.write_bytes(data_helpers.video_bytes(12, width=40, height=30, fps=15))
  frames, fps = video.decode_video(path)
  assert frames.shape == (12, 30, 40, 3) and frames.dtype == np.uint8
  assert fps == 15
  assert data_helpers.frame_marks(frames) == list(range(12))
  frames, _ = video.decode_video(path, short_side=60)
  assert frames.shape == (12, 60, 80, 3)


@pytest.mark.parametrize('content, reason', [
    (b'', 'the file is empty'),
    (data_helpers.truncated(data_helpers.video_bytes(20)), 'truncated: 3 of '
     'the 20 frames'),
    (b'not a video at all' * 10, 'not a readable video'),
])
def test_undecodable_files_raise_a_dataset_error_naming_them(tmp_path, content,
                                                             reason):
  path = tmp_path / 'bad.avi'
  path.write_bytes(content)
  with pytest.raises(DatasetError, match=f'bad.avi: {reason}'):
    video.decode_video(path)
  with pytest.raises(DatasetError, match='does not exist'):
    video.decode_video(tmp_path / 'missing.avi')


def test_video_to_jpegs_resizes_short_side_keeping_aspect():
  jpegs, fps = video.video_to_jpegs(data_helpers.video_bytes(4, 32, 24))
  assert len(jpegs) == 4 and fps == 25
  image = Image.open(io.BytesIO(jpegs[0]))
  assert image.format == 'JPEG' and image.size == (341, 256)
  assert video.resized_shape(320, 240, 256) == (341, 256)


def test_count_frames_and_decode_chosen_frames(tmp_path):
  path = tmp_path / 'clip.avi'
  path.write_bytes(data_helpers.video_bytes(12))
  assert video.count_frames(path) == 12
  all_frames, _ = video.decode_video(path, short_side=48)
  chosen, fps = video.decode_video(path, short_side=48, indices=[7, 0, 0, 11])
  assert fps == 25
  np.testing.assert_array_equal(chosen, all_frames[[7, 0, 0, 11]])
  with pytest.raises(DatasetError,
                     match='clip.avi: frame 12 was asked for, but 12 frames'):
    video.decode_video(path, indices=[3, 12])
  broken = tmp_path / 'broken.avi'
  broken.write_bytes(data_helpers.truncated(data_helpers.video_bytes(20)))
  with pytest.raises(DatasetError, match='broken.avi: truncated'):
    video.count_frames(broken)
