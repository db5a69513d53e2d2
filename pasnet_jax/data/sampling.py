"""TSN segment sampling: which K frames of a video a clip is made of.

A video of T frames is cut into K segments of equal length (paper Sec.
III-C/D). Training takes a random frame of each segment, where segment i
holds frames floor(i T / K) .. floor((i + 1) T / K) - 1; evaluation takes the
frame at the segment's centre, floor((i + 0.5) T / K), TSN's test formula.
A video shorter than K frames has empty segments; they repeat the frame
where they start, so the clip shows the video's frames in order, some twice,
rather than failing.
"""

import numpy as np


def _check_counts(num_video_frames: int, num_segments: int):
  if num_video_frames < 1 or num_segments < 1:
    raise ValueError(f'need at least one frame and one segment, got '
                     f'{num_video_frames} frames and {num_segments} segments')


def _segment_bounds(num_video_frames: int, num_segments: int):
  _check_counts(num_video_frames, num_segments)
  starts = np.arange(num_segments) * num_video_frames // num_segments
  ends = np.arange(1, num_segments + 1) * num_video_frames // num_segments
  return starts, ends - starts


def train_indices(num_video_frames: int, num_segments: int,
                  rng: np.random.Generator) -> np.ndarray:
  """One random frame index from each of the K segments, in order."""
  starts, lengths = _segment_bounds(num_video_frames, num_segments)
  # An empty segment (a video shorter than K) gets floor(u * 0) = 0: its start.
  offsets = np.floor(rng.random(num_segments) * lengths).astype(np.int64)
  return starts + offsets


def centre_indices(num_video_frames: int, num_segments: int,
                   clip: int = 0, num_clips: int = 1) -> np.ndarray:
  """The frame index at the centre of each of the K segments.

  With `num_clips` > 1 (multi-view evaluation), clip c takes the frame at
  (c + 0.5) / num_clips of each segment instead, so the clips are evenly
  spread and clip 0 of 1 is the centre.
  """
  _check_counts(num_video_frames, num_segments)
  position = (np.arange(num_segments) + (clip + 0.5) / num_clips)
  return np.floor(position * num_video_frames / num_segments).astype(np.int64)
