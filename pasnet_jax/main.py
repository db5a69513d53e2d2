"""Trains and evaluates PAS-Net.

  python -m pasnet_jax.main --config=configs/ucf101.py --workdir=DIR
  python -m pasnet_jax.main --config=configs/ucf101.py:split=2,frames=32 \
      --config.optimizer.learning_rate=0.0005 --workdir=DIR

Running the same command again resumes from the latest complete checkpoint.
"""

import os
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
  """absl's parsing, with one line for a bad flag, key or config argument."""
  try:
    _check_config_file(argv)
    return flags.FLAGS(argv)
  except (flags.Error, errors.ConfigArgumentError) as error:
    message = str(error).replace('\n', ' ')
  except (KeyError, AttributeError) as error:
    detail = str(error.args[0] if error.args else error).replace('\n', ' ')
    message = (f'unknown config key {detail}; see configs/default.py for the '
               'keys there are.')
  sys.stderr.write(f'error: {message}\n')
  sys.exit(errors.BAD_INPUT)


def _check_config_file(argv: list[str]) -> None:
  """ml_collections reports a missing config file only when the config is
  first used: in several lines, or a traceback when a key is overridden."""
  config_argument = _config_argument(
      flags.FLAGS.read_flags_from_files(argv, force_gnu=False))
  if config_argument is None:
    return
  path = config_argument.split(':', 1)[0]
  if not os.path.isfile(path):
    raise errors.ConfigArgumentError(
        f'config file {path} does not exist; give --config=FILE, e.g. '
        'configs/ucf101.py')


def _config_argument(argv: list[str]) -> str | None:
  """The value of the last --config in `argv`, which is the one absl keeps."""
  value = None
  for index, arg in enumerate(argv):
    name, equals, given = arg.partition('=')
    if name in ('--config', '-config'):
      value = given if equals else (argv[index + 1] if index + 1 < len(argv)
                                    else None)
  return value


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
