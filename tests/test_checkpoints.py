"""Initialisation from converted weights, and unusable checkpoints."""

import numpy as np
import orbax.checkpoint as ocp
import pytest

from pasnet_jax import checkpoints


def _fresh():
  return {'params': {'appearance': {'conv': {'kernel': np.zeros((3, 3, 3, 4))}},
                     'pose': {'conv1_1': {'kernel': np.zeros((3, 3, 3, 64))}},
                     'classifier': {'kernel': np.zeros((512, 10)),
                                    'bias': np.zeros((10,))}},
          'batch_stats': {'appearance': {'bn': {'mean': np.zeros((4,))}}}}


def test_merge_reports_loaded_new_and_dropped():
  eco = {'params': {'appearance': {'conv': {'kernel': np.ones((3, 3, 3, 4))}},
                    'classifier': {'kernel': np.ones((512, 400)),
                                   'bias': np.ones((400,))},
                    'old_head': {'kernel': np.ones((2, 2))}},
         'batch_stats': {'appearance': {'bn': {'mean': np.full((4,), 2.0)}}}}
  merged, report = checkpoints.merge_initial(_fresh(), [('ECO x', eco)])
  assert np.all(merged['params']['appearance']['conv']['kernel'] == 1)
  assert np.all(merged['batch_stats']['appearance']['bn']['mean'] == 2)
  # Wrong-sized classifier and unknown tensors are dropped, never reshaped.
  assert np.all(merged['params']['classifier']['kernel'] == 0)
  assert merged['params']['classifier']['kernel'].shape == (512, 10)
  text = '\n'.join(report)
  assert 'loaded 2 tensors from ECO x' in text
  assert 'params/classifier/kernel from ECO x: shape (512, 400) != (512, 10)' in text
  assert 'params/old_head/kernel from ECO x (not in this model)' in text
  assert 'newly initialised 3 tensors: params/classifier, params/pose' in text


def test_later_sources_win():
  first = {'params': {'pose': {'conv1_1': {'kernel': np.ones((3, 3, 3, 64))}}}}
  second = {'params': {'pose': {'conv1_1': {'kernel': np.full((3, 3, 3, 64), 5.0)}}}}
  merged, _ = checkpoints.merge_initial(_fresh(), [('a', first), ('b', second)])
  assert np.all(merged['params']['pose']['conv1_1']['kernel'] == 5)


def test_missing_and_foreign_checkpoints_are_clear_errors(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match='do not exist'):
    checkpoints.load_variables(str(tmp_path / 'nowhere'))
  foreign = tmp_path / 'foreign'
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(foreign, {'weights': np.ones(3)})
  with pytest.raises(checkpoints.CheckpointError, match='no "params"'):
    checkpoints.load_variables(str(foreign))
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'garbage').write_bytes(b'not a checkpoint')
  with pytest.raises(checkpoints.CheckpointError, match='Cannot read initial weights'):
    checkpoints.load_variables(str(broken))
