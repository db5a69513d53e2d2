"""Trains and evaluates PAS-Net.

  python -m pasnet_jax.main --config=configs/ucf101.py --workdir=DIR
  python -m pasnet_jax.main --config=configs/ucf101.py:split=2,frames=32 \
      --config.optimizer.learning_rate=0.0005 --workdir=DIR

Running the same command again resumes from the latest complete checkpoint.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from pasnet_jax import cli
from pasnet_jax import errors

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, '
                               'logs and results.', required=True)
config_flags.DEFINE_config_file('config', None, 'Training config file.',
                                lock_config=True)


def parse_flags(argv):
  """absl's parsing, with a one-line error for an unknown config key."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    sys.stderr.write(f'error: {error}\n')
  except (KeyError, AttributeError) as error:
    detail = str(error.args[0] if error.args else error).replace('\n', ' ')
    sys.stderr.write(f'error: unknown config key {detail}; see configs/default.py '
                     'for the keys there are.\n')
  sys.exit(errors.BAD_INPUT)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  from pasnet_jax import train  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  logging.info('Config:\n%s', config)
  cli.quiet_libraries()
  with cli.clean_errors():
    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  sys.exit(app.run(main, flags_parser=parse_flags))
