"""TSN segment sampling indices."""

import numpy as np
import pytest

from pasnet_jax.data import sampling


@pytest.mark.parametrize('num_segments', [1, 3, 8, 16])
@pytest.mark.parametrize('num_video_frames', [1, 5, 300])
def test_indices_in_order_and_one_per_segment(num_video_frames, num_segments):
  rng = np.random.default_rng(0)
  starts = np.arange(num_segments) * num_video_frames // num_segments
  ends = np.arange(1, num_segments + 1) * num_video_frames // num_segments
  centre = sampling.centre_indices(num_video_frames, num_segments)
  draws = [sampling.train_indices(num_video_frames, num_segments, rng)
           for _ in range(50)]
  for indices in [centre] + draws:
    assert indices.shape == (num_segments,)
    assert np.all(np.diff(indices) >= 0)
    assert indices.min() >= 0 and indices.max() < num_video_frames
  for indices in draws:
    # Inside its segment; an empty segment repeats the frame it starts at.
    assert np.all(indices >= starts)
    assert np.all(indices < np.maximum(ends, starts + 1))
  positions = (np.arange(num_segments) + 0.5) * num_video_frames / num_segments
  assert centre.tolist() == np.floor(positions).astype(int).tolist()
  if num_video_frames >= num_segments:
    assert all(len(set(d)) == num_segments for d in [centre] + draws)
  if num_video_frames >= 2 * num_segments:
    assert len({tuple(d) for d in draws}) > 1  # training draws vary


def test_known_values():
  assert sampling.centre_indices(300, 3).tolist() == [50, 150, 250]
  assert sampling.centre_indices(1, 16).tolist() == [0] * 16
  # Shorter than K: every frame, in order, some twice.
  assert sampling.centre_indices(5, 8).tolist() == [0, 0, 1, 2, 2, 3, 4, 4]
  rng = np.random.default_rng(0)
  assert sampling.train_indices(5, 8, rng).tolist() == [0, 0, 1, 1, 2, 3, 3, 4]


def test_multi_clip_offsets_spread_within_segments():
  clips = [sampling.centre_indices(300, 3, c, 3).tolist() for c in range(3)]
  assert clips == [[16, 116, 216], [50, 150, 250], [83, 183, 283]]


def test_rejects_empty_video():
  with pytest.raises(ValueError):
    sampling.centre_indices(0, 8)
