"""Reading checkpoints: unusable ones are clear errors."""

import numpy as np
import orbax.checkpoint as ocp
import pytest

from pasnet_jax import checkpoints
from pasnet_jax import errors


def _fresh():
  return {'params': {'appearance': {'conv': {'kernel': np.zeros((3, 3, 3, 4))}},
                     'pose': {'conv1_1': {'kernel': np.zeros((3, 3, 3, 64))}},
                     'classifier': {'kernel': np.zeros((512, 10)),
                                    'bias': np.zeros((10,))}},
          'batch_stats': {'appearance': {'bn': {'mean': np.zeros((4,))}}}}


def test_missing_and_foreign_checkpoints_are_clear_errors(tmp_path):
  with pytest.raises(errors.CheckpointError, match='do not exist'):
    checkpoints.load_variables(str(tmp_path / 'nowhere'))
  foreign = tmp_path / 'foreign'
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(foreign, {'weights': np.ones(3)})
  with pytest.raises(errors.CheckpointError, match='no "params"'):
    checkpoints.load_variables(str(foreign))
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'garbage').write_bytes(b'not a checkpoint')
  with pytest.raises(errors.CheckpointError, match='Cannot read initial weights'):
    checkpoints.load_variables(str(broken))


def test_check_fits_names_the_keys_that_differ():
  other = _fresh()
  other['params']['classifier'] = {'kernel': np.zeros((512, 5)),
                                   'bias': np.zeros((5,))}
  del other['params']['pose']
  with pytest.raises(errors.CheckpointError) as failure:
    checkpoints.check_fits(other, _fresh(), 'run x')
  assert str(failure.value) == (
      'run x does not fit the model its config describes: '
      'params/classifier/bias has shape (5,), this model (10,); '
      'params/classifier/kernel has shape (512, 5), this model (512, 10); '
      'params/pose/conv1_1/kernel is missing. The checkpoint and config.json '
      'come from different runs.')
  checkpoints.check_fits(_fresh(), _fresh(), 'run x')


def test_format_file_round_trip_and_newer_format(tmp_path):
  assert checkpoints.read_format(str(tmp_path)) is None
  checkpoints.write_format(str(tmp_path), {'model.fusion': 'A', 'num_classes': 10})
  assert checkpoints.read_format(str(tmp_path)) == {'model.fusion': 'A',
                                                    'num_classes': 10}
  path = tmp_path / checkpoints.FORMAT_FILE
  path.write_text('{"format_version": 99, "written_by": "pasnet_jax 9.0", '
                  '"identity": {}}')
  with pytest.raises(errors.CheckpointError,
                     match='format 99, written by pasnet_jax 9.0; this '
                     'pasnet_jax reads format 2 and earlier. Upgrade pasnet_jax'):
    checkpoints.read_format(str(tmp_path))
  # Format 1 runs hold no learning-rate state: their weights can start a
  # new run, they cannot resume.
  path.write_text('{"format_version": 1, "identity": {}}')
  with pytest.raises(errors.CheckpointError,
                     match=f'format 1, which this pasnet_jax cannot resume.*'
                     f'--config.init.workdir={tmp_path}'):
    checkpoints.read_format(str(tmp_path))
  path.write_text('{"format_vers')
  with pytest.raises(errors.CheckpointError, match='is unreadable'):
    checkpoints.read_format(str(tmp_path))


def test_the_best_step_is_the_best_evaluated_one_also_after_reopening(tmp_path):
  workdir = str(tmp_path)
  manager = checkpoints.create_manager(workdir, keep=2, asynchronous=False)
  state = _fresh()
  for step, top1 in [(1, 0.9), (2, 0.1), (3, 0.2), (4, 0.3)]:
    state['params']['classifier']['bias'] = np.full((10,), float(step))
    checkpoints.save(manager, step, state, {'position': step},
                     metrics={'top1': top1})
  checkpoints.wait(manager)
  assert checkpoints.complete_steps(str(tmp_path / 'checkpoints')) == [1, 3, 4]
  assert checkpoints.best_step(manager) == 1
  manager.close()
  checkpoints.write_format(workdir, {'model.fusion': 'A', 'num_classes': 10})
  best = checkpoints.load_variables(workdir)
  np.testing.assert_array_equal(best['params']['classifier']['bias'],
                                np.full((10,), 1.0))
  latest = checkpoints.load_variables(workdir, which='latest')
  np.testing.assert_array_equal(latest['params']['classifier']['bias'],
                                np.full((10,), 4.0))
