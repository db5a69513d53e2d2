"""The weights a model starts from, by the one rule of
pasnet_jax.initial_weights: what fits loads, a classifier of another size
and style I's first 3D convolution are drawn fresh, a part the style does
without is left out, anything else that does not fit is an error."""

import numpy as np
import pytest

from pasnet_jax import errors
from pasnet_jax import initial_weights
from pasnet_jax.initial_weights import Source
from pasnet_jax.models.pasnet import PASNet, init_variables

VIDEO_SHAPE = (1, 1, 32, 32, 3)


def variables(fusion, classes=5, layout='official', seed=0):
  model = PASNet(classes, fusion=fusion, eco_layout=layout)
  return model, init_variables(model, seed, VIDEO_SHAPE)


def test_eco_weights_load_and_the_rest_is_drawn_fresh():
  _, eco = variables('A', seed=1)
  model, fresh = variables('A+pool(I)+pool(F)')
  combined, report = initial_weights.combine(fresh, [Source('ECO e', eco)], model)
  np.testing.assert_array_equal(
      combined['params']['spatiotemporal']['res4a_down']['kernel'],
      eco['params']['spatiotemporal']['res4a_down']['kernel'])
  np.testing.assert_array_equal(
      combined['batch_stats']['appearance']['conv1_7x7_s2_bn']['var'],
      eco['batch_stats']['appearance']['conv1_7x7_s2_bn']['var'])
  np.testing.assert_array_equal(combined['params']['pose']['conv1_1']['kernel'],
                                fresh['params']['pose']['conv1_1']['kernel'])
  assert report.loaded[('ECO e', 'appearance')] == 114
  assert report.loaded[('ECO e', 'spatiotemporal')] == 70
  assert report.loaded[('ECO e', 'classifier')] == 2
  assert set(report.new) == {'pose'}


def test_a_classifier_of_another_size_is_drawn_fresh():
  _, kinetics = variables('A', classes=400, seed=1)
  model, fresh = variables('A', classes=101)
  combined, report = initial_weights.combine(fresh, [Source('ECO k', kinetics)],
                                             model)
  assert combined['params']['classifier']['kernel'].shape == (512, 101)
  np.testing.assert_array_equal(combined['params']['classifier']['kernel'],
                                fresh['params']['classifier']['kernel'])
  assert report.new == {'classifier': 'ECO k has 400 classes, this model 101'}


def test_style_i_leaves_the_appearance_out_and_redraws_the_first_3d_conv():
  _, eco = variables('A', seed=1)
  model, fresh = variables('I')
  combined, report = initial_weights.combine(fresh, [Source('ECO e', eco)], model)
  assert combined['params']['spatiotemporal']['res3a_2']['kernel'].shape[-2] == 128
  assert 'fusion I feeds it 128 channels' in report.new['spatiotemporal/res3a_2']
  assert report.left_out[('ECO e', 'appearance')] == (
      114, 'fusion I has no use for it')
  np.testing.assert_array_equal(
      combined['params']['spatiotemporal']['res5b_2']['kernel'],
      eco['params']['spatiotemporal']['res5b_2']['kernel'])


def test_weights_of_the_other_layout_are_an_error_naming_a_tensor():
  _, early = variables('A', layout='early', seed=1)
  assert initial_weights.eco_layout([Source('ECO e', early)], 'official') == 'early'
  model, fresh = variables('A')
  with pytest.raises(errors.CheckpointError,
                     match=r'ECO e holds tensors that do not fit this model: .*'
                     r'params/spatiotemporal/res3a_1/kernel \(3, 3, 3, 96, 128\) '
                     r'\(not in this model\).* ECO layout official'):
    initial_weights.combine(fresh, [Source('ECO e', early)], model)


def test_a_misshapen_tensor_is_an_error_naming_it():
  _, eco = variables('A', seed=1)
  eco['params']['appearance']['conv2_3x3']['kernel'] = np.zeros((5, 5, 64, 192))
  model, fresh = variables('A')
  with pytest.raises(errors.CheckpointError,
                     match=r'params/appearance/conv2_3x3/kernel \(5, 5, 64, 192\) '
                     r'\(expected \(3, 3, 64, 192\)\)'):
    initial_weights.combine(fresh, [Source('ECO e', eco)], model)


def test_later_sources_win_and_the_layout_is_the_first_3d_parts():
  _, first = variables('A', seed=1)
  _, second = variables('A', seed=2)
  model, fresh = variables('A')
  combined, _ = initial_weights.combine(
      fresh, [Source('a', first), Source('b', second)], model)
  np.testing.assert_array_equal(
      combined['params']['appearance']['conv1_7x7_s2']['kernel'],
      second['params']['appearance']['conv1_7x7_s2']['kernel'])
  pose_only = {'params': {'pose': {}}}
  assert initial_weights.eco_layout([Source('p', pose_only)], 'early') == 'early'


# ---------------------------------------------------------------- end to end

_UCF_TRAIN = [f'{c}/v_{c}_g08_c0{i}.avi' for c in ('ApplyEyeMakeup', 'Archery')
              for i in (1, 2)]
_UCF_TEST = [f'{c}/v_{c}_g01_c01.avi' for c in ('ApplyEyeMakeup', 'Archery')]


def test_the_authors_kinetics_checkpoint_starts_a_ucf101_run(tmp_path):
  """ECO_Lite_rgb_model_Kinetics.pth.tar as users hold it (every key and
  shape of the authors' ECO.yaml, fixture), converted with
  --drop-classifier and given to a UCF-101-config run as --config.init.eco:
  every 2D and 3D tensor loads, only the classifier is new."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from tests import data_helpers  # pylint: disable=g-import-not-at-top
  from tests import torch_helpers as th  # pylint: disable=g-import-not-at-top
  from tests.test_convert import kinetics_keys  # pylint: disable=g-import-not-at-top

  generator = torch.Generator().manual_seed(0)
  state = {}
  for key, shape in kinetics_keys().items():
    if key.endswith('num_batches_tracked'):
      state[key] = torch.tensor(1000, dtype=torch.long)
    elif key.endswith('running_var'):
      state[key] = torch.rand(shape, generator=generator) + 0.5
    else:
      state[key] = torch.randn(shape, generator=generator) * 0.05
  checkpoint = tmp_path / 'ECO_Lite_rgb_model_Kinetics.pth.tar'
  torch.save({**th.TRAINING_CHECKPOINT, 'state_dict': state}, checkpoint)
  converted = th.run_converter('eco', checkpoint, tmp_path / 'eco',
                               '--drop-classifier')
  assert converted.returncode == 0, converted.stderr

  manual = tmp_path / 'manual'
  manual.mkdir()
  data_helpers.write_rar4(manual / 'UCF101.rar', {
      f'UCF-101/{p}': data_helpers.video_bytes(6, seed=i)
      for i, p in enumerate(_UCF_TRAIN + _UCF_TEST)})
  data_helpers.write_zip(manual / 'UCF101TrainTestSplits-RecognitionTask.zip',
                         data_helpers.ucf101_split_files(_UCF_TRAIN, _UCF_TEST))
  command = [
      sys.executable, '-m', 'pasnet_jax.main',
      '--config=configs/ucf101.py:frames=4,fusion=A',
      f'--workdir={tmp_path / "run"}', f'--config.init.eco={tmp_path / "eco"}',
      f'--config.dataset.manual_dir={manual}',
      f'--config.dataset.data_dir={tmp_path / "data"}',
      '--config.strategy=conventional', '--config.image_size=64',
      '--config.eval_short_side=72', '--config.batch_size=4',
      '--config.eval_batch_size=2', '--config.num_train_steps=1']
  result = subprocess.run(command, cwd=th.REPO_ROOT, capture_output=True,
                          text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  log = result.stderr
  eco = f'ECO {tmp_path / "eco"}'
  assert f'init: loaded 114 tensors of appearance from {eco}' in log
  assert f'init: loaded 70 tensors of spatiotemporal from {eco}' in log
  assert 'init: new: classifier (no source gives it; drawn fresh)' in log
  assert len([line for line in log.splitlines() if 'init: new:' in line]) == 1
  assert 'ECO layout: official' in log
