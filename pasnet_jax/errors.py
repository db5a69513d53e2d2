"""Every failure the programs and converters report in one line, and the
exit status each ends with.

A command line (`cli.clean_errors`, `convert.torch_io.run_cli`) prints the
message after `error:`; the message names the file, key or step involved
and says what to do, so no traceback is needed.
"""

import errno

# Exit codes: 2 for bad input (config, data, checkpoint) or storage (full
# disk, unwritable workdir), 3 for a run that stopped on SIGTERM/SIGINT after
# saving, 4 for a diverged (NaN) run, 5 for a multi-process run that lost a
# process (restart all of them).
BAD_INPUT, PREEMPTED, DIVERGED, PEER_LOST = 2, 3, 4, 5

# Why a write failed for lack of room (a full disk, a file size limit, a
# quota): the fix is outside, and the same command then goes on.
NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and a fix."""


class ConfigArgumentError(Exception):
  """A bad --config: a missing FILE, or a bad key or value in the argument
  that FILE:key=value,... passes to its get_config.

  Not a ValueError: ml_collections turns a ValueError from `get_config` into
  a flag error whose message is the whole traceback.
  """


class TrainingError(Exception):
  """Training cannot go on; the message says why and what to do."""


class Diverged(TrainingError):
  """The loss became NaN or infinite."""


class PeerLost(TrainingError):
  """A collective operation failed: another process has most likely died."""


class Preempted(Exception):
  """SIGTERM or SIGINT arrived; a checkpoint of the current step was saved."""


class CheckpointError(Exception):
  """A checkpoint that cannot be used; the message says which and why."""


class StorageError(CheckpointError):
  """A checkpoint could not be written: the disk is full or read-only."""


class DatasetError(Exception):
  """Input data that cannot be used: missing or malformed archives, split
  files or videos, or a dataset that is not prepared.
  """


class ConversionError(Exception):
  """A bad input to a converter; the message is one line naming the file and
  the keys."""


class UsageProblem(Exception):
  """A request a program cannot serve; the message says why."""
