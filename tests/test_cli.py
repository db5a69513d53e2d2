"""The training command's answers to bad configs: one line, exit 2, no work."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('override, message', [
    ('--config.optimiser.learning_rate=1',
     "error: unknown config key 'optimiser' Did you mean \"optimizer\""),
    ('--config.frames=abc', 'error: flag --config.frames=abc: invalid literal'),
    ('--config.model.fusion=A+B', "error: Invalid config: model.fusion='A+B' is not a style"),
])
def test_bad_config_is_one_clear_line(override, message, tmp_path):
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-m', 'pasnet_jax.main', '--config=configs/synthetic.py',
       f'--workdir={workdir}', override], cwd=ROOT, capture_output=True,
      text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 2
  assert message in result.stderr
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))
