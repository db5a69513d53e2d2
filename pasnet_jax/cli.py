"""What the command-line programs share: one clear line per known failure."""

import contextlib
import logging as python_logging
import os
import sys

from absl import logging

from pasnet_jax import errors

# TensorFlow (used only for tf.data) need not report its CPU features.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_CHATTY_LIBRARIES = ('/orbax/', '/tensorflow_datasets/', '/jax/', '/flax/',
                     '/tensorflow/')


class _LibraryInfoFilter(python_logging.Filter):
  """Keeps the libraries' warnings and errors, drops their routine INFO."""

  def filter(self, record):
    return record.levelno >= python_logging.WARNING or not any(
        part in record.pathname for part in _CHATTY_LIBRARIES)


def quiet_libraries() -> None:
  """Leaves the console to this project's progress lines."""
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())


@contextlib.contextmanager
def clean_errors():
  """Turns the project's known errors into a message and an exit code.

  Anything else is a bug and keeps its traceback.
  """
  try:
    yield
  except errors.Preempted as stop:
    logging.warning('%s', stop)
    sys.exit(errors.PREEMPTED)
  except errors.Diverged as error:
    _fail(str(error), errors.DIVERGED)
  except errors.PeerLost as error:
    # Exiting normally would run jax.distributed's shutdown barrier, which
    # waits for the dead process and then aborts the survivor.
    _fail(str(error), errors.PEER_LOST, immediately=True)
  except (errors.TrainingError, errors.ConfigError, errors.DatasetError,
          errors.CheckpointError, errors.UsageProblem) as error:
    _fail(str(error), errors.BAD_INPUT)
  except OSError as error:
    message = f'{error.strerror or error}: {error.filename or ""}'.rstrip(': ')
    if error.errno in errors.NO_ROOM_ERRNOS:
      message += '; free space there and run the same command again'
    _fail(message, errors.BAD_INPUT)


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
