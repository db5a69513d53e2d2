"""HMDB-51 (51 classes).

Variants: --config=configs/hmdb51.py:split=2,frames=16,fusion=A
"""

from pasnet_jax import config_files

default = config_files.load_beside(__file__, 'default')


def get_config(arg: str = ''):
  # The paper trains both datasets alike: the authors' UCF-101 recipe.
  return default.video_dataset_config('hmdb51_frames', arg)
