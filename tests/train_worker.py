"""Runs the training program on a tiny generated dataset; for fault tests.

  python tests/train_worker.py DATA_DIR WORKDIR NUM_TRAIN_STEPS

Builds (once) a tiny `synthetic_actions` in DATA_DIR and trains fusion "A"
at 32 x 32 through the same error handling as `python -m pasnet_jax.main`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import logging  # pylint: disable=g-import-not-at-top

from configs import synthetic as synthetic_config  # pylint: disable=g-import-not-at-top
from pasnet_jax import cli  # pylint: disable=g-import-not-at-top
from pasnet_jax import train  # pylint: disable=g-import-not-at-top
from pasnet_jax.data import synthetic  # pylint: disable=g-import-not-at-top


def tiny_dataset(data_dir: str) -> train.DatasetInfo:
  config = synthetic.SyntheticActionsConfig(
      name='tiny', train_subjects=2, test_subjects=1, image_size=64,
      min_frames=8, max_frames=12)
  builder = synthetic.SyntheticActions(config=config, data_dir=data_dir)
  builder.download_and_prepare()
  return train.DatasetInfo(
      builder=builder, class_names=list(builder.info.features['label'].names),
      num_train_examples=builder.info.splits['train'].num_examples)


def small_config(num_train_steps: int):
  config = synthetic_config.get_config()
  config.strategy = 'conventional'
  config.model.fusion = 'A'
  config.frames, config.image_size, config.eval_short_side = 2, 32, 36
  config.batch_size, config.eval_batch_size = 4, 4
  config.num_train_steps = num_train_steps
  config.checkpoint_every_steps = 1000
  config.eval_every_steps = 1000
  config.log_every_steps = 1
  config.optimizer.decay_at = ()
  config.optimizer.warmup_steps = 0
  return config


def main():
  data_dir, workdir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
  logging.set_verbosity(logging.INFO)
  dataset = tiny_dataset(data_dir)
  train.load_dataset = lambda dataset_config: dataset
  with cli.clean_errors():
    train.train_and_evaluate(small_config(steps), workdir)


if __name__ == '__main__':
  main()
