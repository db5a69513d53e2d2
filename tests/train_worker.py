"""Runs the training program on a tiny generated dataset; for fault tests.

  python tests/train_worker.py DATA_DIR WORKDIR NUM_TRAIN_STEPS
      [--checkpoint-every N] [--init-workdir DIR] [--set KEY=VALUE ...]
      [--coordinator HOST:PORT --num-processes P --process-id I --timeout S]

Builds (once) a tiny `synthetic_actions` in DATA_DIR and trains fusion "A"
at 32 x 32 through the same error handling as `python -m pasnet_jax.main`.
With several processes, the dataset must have been built beforehand.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import logging  # pylint: disable=g-import-not-at-top

from pasnet_jax import cli  # pylint: disable=g-import-not-at-top
from pasnet_jax import train  # pylint: disable=g-import-not-at-top
from tests import run_helpers  # pylint: disable=g-import-not-at-top


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('data_dir')
  parser.add_argument('workdir')
  parser.add_argument('steps', type=int)
  parser.add_argument('--checkpoint-every', type=int, default=1000)
  parser.add_argument('--init-workdir', default='')
  parser.add_argument('--set', action='append', default=[],
                      help='A config override, e.g. model.fusion=A+pool(I).')
  parser.add_argument('--coordinator', default='')
  parser.add_argument('--num-processes', type=int, default=0)
  parser.add_argument('--process-id', type=int, default=-1)
  parser.add_argument('--timeout', type=int, default=300)
  args = parser.parse_args()

  logging.set_verbosity(logging.INFO)
  config = run_helpers.small_config(
      num_train_steps=args.steps, checkpoint_every_steps=args.checkpoint_every,
      eval_every_steps=1000)
  config.init.workdir = args.init_workdir
  # The faults include reader processes that die or outlive the run.
  config.data_workers = -1
  for override in args.set:
    key, value = override.split('=', 1)
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = (value == 'True' if isinstance(node[leaf], bool)
                  else type(node[leaf])(value))
  if args.coordinator:
    config.distributed.initialize = 'always'
    config.distributed.coordinator_address = args.coordinator
    config.distributed.num_processes = args.num_processes
    config.distributed.process_id = args.process_id
    config.distributed.timeout_seconds = args.timeout
  dataset = run_helpers.tiny_dataset(args.data_dir)
  with cli.clean_errors():
    train.train_and_evaluate(config, args.workdir, dataset)


if __name__ == '__main__':
  main()
