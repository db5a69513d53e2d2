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

# Exit codes: 2 for bad input (config, data, checkpoint), 3 for a run that
# stopped on SIGTERM/SIGINT after saving, 4 for a diverged (NaN) run.
BAD_INPUT, PREEMPTED, DIVERGED = 2, 3, 4


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
  except (train.TrainingError, train.ConfigError, DatasetError,
          checkpoints.CheckpointError, UsageProblem) as error:
    _fail(str(error), BAD_INPUT)
  except OSError as error:
    _fail(f'{error.strerror or error}: {error.filename or ""}'.rstrip(': '),
          BAD_INPUT)


def _fail(message: str, code: int):
  sys.stderr.write(f'error: {message}\n')
  sys.exit(code)
