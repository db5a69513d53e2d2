"""Trains and evaluates PAS-Net.

  python -m pasnet_jax.main --config=configs/ucf101.py --workdir=DIR
  python -m pasnet_jax.main --config=configs/ucf101.py:split=2,frames=32 \\
      --config.optimizer.learning_rate=0.0005 --workdir=DIR

Running the same command again resumes from the latest complete checkpoint.
Every key of a config, with its value and meaning:

  python -m pasnet_jax.main --config=configs/ucf101.py --print_config
"""

import difflib
import os
import re
import sys

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags

from pasnet_jax import cli
from pasnet_jax import config_files
from pasnet_jax import errors

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Directory for checkpoints, logs and results; needed '
    'unless --print_config.')
_PRINT_CONFIG = flags.DEFINE_bool(
    'print_config', False, 'Print the resolved config (after the '
    '--config.KEY overrides), each key with its value and meaning, and exit '
    'without training.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, as FILE or FILE:key=value,... (see its '
    'get_config); --config.KEY=VALUE sets any key, and --print_config lists '
    'them.', lock_config=True)

_OVERRIDE = re.compile(r'--?(?:no)?config\.([^=\[]+)')
# Where printed values end and their meanings start, unless a value is longer.
_MEANING_COLUMN = 40


def parse_flags(argv):
  """absl's parsing, with one line for a bad flag, key or config argument."""
  try:
    _check_config_file(argv)
    return flags.FLAGS(argv)
  except (flags.Error, errors.ConfigArgumentError) as error:
    message = str(error).replace('\n', ' ')
  except (KeyError, AttributeError):
    # ml_collections's message for an unknown key is the repr of a
    # multi-line KeyError, without the key's full path.
    message = _unknown_keys_message(argv)
    if message is None:
      raise
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


def _unknown_keys_message(argv: list[str]) -> str | None:
  """Names each --config.KEY of `argv` that the config lacks, with the keys
  closest to it; None when every key is there."""
  argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
  config_argument = _config_argument(argv)
  if config_argument is None:
    return None
  config = flags.FLAGS['config'].parser.parse(config_argument)
  leaves = [key for key, _ in config_files.flat_items(config)]
  groups = {leaf.rsplit('.', depth)[0] for leaf in leaves
            for depth in range(1, leaf.count('.') + 1)}
  unknown = []
  for match in filter(None, map(_OVERRIDE.match, argv)):
    key = match.group(1)
    if key in leaves or key in groups:
      continue
    closest = _closest_keys(key, leaves)
    unknown.append(f'{key} (closest: {", ".join(closest)})' if closest
                   else key)
  if not unknown:
    return None
  return (f'unknown config key{"s" if len(unknown) > 1 else ""} '
          f'{", ".join(unknown)}; --print_config lists every key with its '
          'meaning')


def _closest_keys(key: str, leaves: list[str]) -> list[str]:
  """Up to three keys of `leaves` that `key` may have meant."""
  # A key in the wrong group (optimiser.learning_rate) is found by its last
  # part, a misspelt one (num_train_step) by its whole path.
  last = key.rsplit('.', 1)[-1]
  closest = [leaf for leaf in leaves if difflib.get_close_matches(
      last, [leaf.rsplit('.', 1)[-1]], 1, 0.75)]
  closest += [leaf for leaf in difflib.get_close_matches(key, leaves, 3, 0.6)
              if leaf not in closest]
  return closest[:3]


def _config_argument(argv: list[str]) -> str | None:
  """The value of the last --config in `argv`, which is the one absl keeps."""
  value = None
  for index, arg in enumerate(argv):
    name, equals, given = arg.partition('=')
    if name in ('--config', '-config'):
      value = given if equals else (argv[index + 1] if index + 1 < len(argv)
                                    else None)
  return value


def _config_lines(config: ml_collections.ConfigDict,
                 meanings: dict[str, str]) -> list[str]:
  """`key = value  # meaning` for every key of `config`."""
  lines = []
  for key, value in config_files.flat_items(config):
    setting = f'{key} = {value!r}'
    meaning = meanings.get(key)
    lines.append(f'{setting:<{_MEANING_COLUMN}}  # {meaning}' if meaning
                 else setting)
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  config = _CONFIG.value
  cli.quiet_libraries()
  with cli.clean_errors():
    # Imported here, so that --help and flag errors answer without JAX.
    if _PRINT_CONFIG.value:
      from pasnet_jax import config_checks  # pylint: disable=g-import-not-at-top
      config_checks.check_config(config)
      # Every config file builds on the default.py beside it.
      config_file = config_flags.get_config_filename(flags.FLAGS['config'])
      default = config_files.load_beside(config_file.split(':', 1)[0],
                                         'default')
      print('\n'.join(_config_lines(config, default.MEANINGS)))
      return
    from pasnet_jax import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  flags.register_multi_flags_validator(
      ['workdir', 'print_config'],
      lambda values: values['workdir'] is not None or values['print_config'],
      message='--workdir is required to train (--print_config needs none)')
  sys.exit(app.run(main, flags_parser=parse_flags))
