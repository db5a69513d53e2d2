"""scripts/setup.sh stops with one line naming the package to install."""

import os
import pathlib
import shutil
import subprocess


SCRIPT = pathlib.Path(__file__).parent.parent / 'scripts' / 'setup.sh'
# What the script runs before its checks; bsdtar, unrar, apt-get and python3
# are left out, as on a bare machine where the user cannot run apt-get.
TOOLS = ('dirname', 'id')


def run_setup(tmp_path, *args):
  (tmp_path / 'scripts').mkdir()
  shutil.copy(SCRIPT, tmp_path / 'scripts' / 'setup.sh')
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for tool in TOOLS:
    os.symlink(shutil.which(tool), bin_dir / tool)
  return subprocess.run(
      [shutil.which('bash'), str(tmp_path / 'scripts' / 'setup.sh'), *args],
      env={'PATH': str(bin_dir)}, capture_output=True, text=True, timeout=60)


def test_setup_without_bsdtar_stops_naming_the_package(tmp_path):
  result = run_setup(tmp_path)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      'setup: bsdtar is missing; install it with `sudo apt-get install '
      'libarchive-tools` and run this again']
  assert not (tmp_path / '.venv').exists()


def test_demo_setup_needs_no_bsdtar_but_a_python_with_venv(tmp_path):
  result = run_setup(tmp_path, '--demo')
  assert result.returncode == 1
  assert 'bsdtar' not in result.stderr
  assert 'sudo apt-get install python3-venv' in result.stderr
  assert not (tmp_path / '.venv').exists()
