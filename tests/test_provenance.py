"""The git state recorded with benchmark results."""

import subprocess

from pasnet_jax import provenance


def _git(repo, *args):
  subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *args],
                 cwd=repo, check=True, capture_output=True)


def test_git_state_tells_a_clean_tree_from_an_edited_or_added_file(tmp_path):
  _git(tmp_path, 'init', '-q')
  (tmp_path / 'a.py').write_text('x = 1\n')
  _git(tmp_path, 'add', 'a.py')
  _git(tmp_path, 'commit', '-q', '-m', 'a')
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=tmp_path, check=True,
                        capture_output=True, text=True).stdout.strip()
  assert provenance.git_state(str(tmp_path)) == {'git_commit': head,
                                                 'git_dirty': False}
  (tmp_path / 'a.py').write_text('x = 2\n')
  assert provenance.git_state(str(tmp_path))['git_dirty'] is True
  _git(tmp_path, 'checkout', '-q', 'a.py')
  (tmp_path / 'new.py').write_text('')
  assert provenance.git_state(str(tmp_path)) == {'git_commit': head,
                                                 'git_dirty': True}


def test_git_state_outside_a_repository_is_unknown(tmp_path):
  assert provenance.git_state(str(tmp_path)) == {'git_commit': None,
                                                 'git_dirty': None}
