"""What the command-line programs share: one clear line per known failure."""

import contextlib
import logging as python_logging
import os
import sys

from absl import logging

# TensorFlow (used only for tf.data) need not report its CPU features.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_CHATTY_LIBRARIES = ('/orbax/', '/tensorflow_datasets/', '/jax/', '/flax/',
                     '/tensorflow/')

# Exit codes: 2 for bad input (config, data, checkpoint) or storage (full
# disk, unwritable workdir), 3 for a run that stopped on SIGTERM/SIGINT after
# saving, 4 for a diverged (NaN) run, 5 for a multi-process run that lost a
# process (restart all of them).
BAD_INPUT, PREEMPTED, DIVERGED, PEER_LOST = 2, 3, 4, 5


class _LibraryInfoFilter(python_logging.Filter):
  """Keeps the libraries' warnings and errors, drops their routine INFO."""

  def filter(self, record):
    return record.levelno >= python_logging.WARNING or not any(
        part in record.pathname for part in _CHATTY_LIBRARIES)


def quiet_libraries() -> None:
  """Leaves the console to this project's progress lines."""
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())


class UsageProblem(Exception):
  """A request the program cannot serve; the message says why."""


@contextlib.contextmanager
def clean_errors():
  """Turns the project's known errors into a message and an exit code.

  Anything else is a bug and keeps its traceback.
  """
  from pasnet_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from pasnet_jax import train  # pylint: disable=g-import-not-at-top
  from pasnet_jax.data.errors import DatasetError  # pylint: disable=g-import-not-at-top
  try:
    yield
  except train.Preempted as stop:
    logging.warning('%s', stop)
    sys.exit(PREEMPTED)
  except train.Diverged as error:
    _fail(str(error), DIVERGED)
  except train.PeerLost as error:
    # Exiting normally would run jax.distributed's shutdown barrier, which
    # waits for the dead process and then aborts the survivor.
    _fail(str(error), PEER_LOST, immediately=True)
  except (train.TrainingError, train.ConfigError, DatasetError,
          checkpoints.CheckpointError, UsageProblem) as error:
    _fail(str(error), BAD_INPUT)
  except OSError as error:
    message = f'{error.strerror or error}: {error.filename or ""}'.rstrip(': ')
    if error.errno in checkpoints.NO_ROOM_ERRNOS:
      message += '; free space there and run the same command again'
    _fail(message, BAD_INPUT)


def _fail(message: str, code: int, immediately: bool = False):
  sys.stderr.write(f'error: {message}\n')
  sys.stderr.flush()
  sys.stdout.flush()
  if immediately:
    os._exit(code)  # pylint: disable=protected-access
  # The message is the last word: after a failed read or write, threads of
  # Orbax and TensorStore still winding down print echoes of it at exit.
  with open(os.devnull, 'w') as devnull:
    os.dup2(devnull.fileno(), sys.stderr.fileno())
  sys.exit(code)
