"""Which code produced a result: the git commit and whether it was edited.

A figure measured on uncommitted changes cannot be reproduced from the
commit alone, so results record both.
"""

import subprocess


def git_state(path: str) -> dict:
  """{'git_commit': full hash, 'git_dirty': bool} of the work tree at `path`.

  Callers pass their own file's folder: pasnet_jax may be imported from
  another checkout than the script that runs.

  Dirty means `git status --porcelain` lists anything: a modified, staged,
  deleted or untracked file. Both are None where `path` is not in a git
  work tree or git is not installed.
  """
  def git(*args):
    return subprocess.run(['git', *args], cwd=path, capture_output=True,
                          text=True, check=True).stdout
  try:
    return {'git_commit': git('rev-parse', 'HEAD').strip(),
            'git_dirty': bool(git('status', '--porcelain').strip())}
  except (OSError, subprocess.CalledProcessError):
    return {'git_commit': None, 'git_dirty': None}
