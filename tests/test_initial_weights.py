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
