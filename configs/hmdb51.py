"""HMDB-51 (51 classes).

Variants: --config=configs/hmdb51.py:split=2,frames=16,fusion=A
"""

from pasnet_jax import config_files

default = config_files.load_beside(__file__, 'default')


def get_config(arg: str = ''):
  config = default.video_dataset_config('hmdb51_frames', arg)
  # HMDB-51 has about a third of UCF-101's training clips.
  config.num_train_steps = 1500
  config.stage1.num_train_steps = 1000
  config.eval_every_steps = 250
  return config
