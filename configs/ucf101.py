"""UCF-101 (101 classes), the paper's main benchmark.

Variants: --config=configs/ucf101.py:split=2,frames=32,fusion=A
"""

from pasnet_jax import config_files

default = config_files.load_beside(__file__, 'default')


def get_config(arg: str = ''):
  return default.video_dataset_config('ucf101_frames', arg)
