"""The one exception type for unusable input data."""


class DatasetError(Exception):
  """Input data that cannot be used: missing or malformed archives, split
  files or videos, or a dataset that is not prepared.

  The message names the file and says what to do, so a command line can print
  it without a traceback.
  """
