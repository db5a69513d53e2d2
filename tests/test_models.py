"""Shapes, parameter counts, fusion styles, gradients and options of the models."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pasnet_jax.models import fusion as fusion_lib
from pasnet_jax.models import layers
from pasnet_jax.models import spatiotemporal
from pasnet_jax.models.appearance import Appearance
from pasnet_jax.models.pasnet import PASNet, init_variables
from pasnet_jax.models.pose import OpenPose
from pasnet_jax.models.spatiotemporal import Spatiotemporal
from tests.conftest import random_variables

VIDEO_SHAPE = (2, 2, 64, 64, 3)
NUM_CLASSES = 7


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.fixture(scope='module')
def video():
  return np.random.default_rng(1).uniform(0, 255, VIDEO_SHAPE).astype(np.float32)


@functools.cache
def variables_for(style, seed=0):
  return random_variables(PASNet(NUM_CLASSES, fusion=style), VIDEO_SHAPE, seed)


def test_parameter_counts_and_tap_sizes_at_224():
  model = PASNet(101, fusion='A+pool(I)+pool(F)')
  video = jax.ShapeDtypeStruct((1, 4, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), video)
  params = variables['params']
  assert count(params['appearance']) == 681_568
  assert count(params['pose']) == 52_311_446
  # The authors' layout (docs/architecture.md); the early port's has fewer.
  assert count(params['spatiotemporal']) == 36_617_088
  assert count(params['classifier']) == 512 * 101 + 101
  assert 'fusion' not in params
  features = jax.eval_shape(
      functools.partial(model.apply, method=PASNet.features), variables, video)
  for name in ('appearance', 'implicit', 'paf_features', 'explicit', 'heatmap',
               'paf', 'fused'):
    assert features[name].shape[1:3] == (28, 28), name
  assert features['appearance'].shape[-1] == 96
  assert features['implicit'].shape[-1] == 128
  assert features['paf'].shape[-1] == 38
  assert features['heatmap'].shape[-1] == 19
  assert features['explicit'].shape[-1] == 1
  assert features['logits'].shape == (1, 101)


@pytest.mark.parametrize('style', fusion_lib.STYLES)
def test_variable_subtrees_per_style(style):
  params = jax.eval_shape(PASNet(5, fusion=style).init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct(VIDEO_SHAPE, jnp.float32))['params']
  expected = {'spatiotemporal', 'classifier'}
  if style != 'I':
    expected.add('appearance')
  if style != 'A':
    expected.add('pose')
  if style.startswith('conv('):
    expected.add('fusion')
  assert set(params) == expected
  in_channels = params['spatiotemporal']['res3a_2']['kernel'].shape[3]
  assert in_channels == (128 if style == 'I' else 96)


@pytest.mark.parametrize('shape, message', [
    ((1, 2, 60, 64, 3), 'multiples of 32'),
    ((1, 0, 64, 64, 3), 'K >= 1'),
    ((2, 64, 64, 3), r'\(B, K, H, W, 3\)'),
])
def test_bad_video_shapes_are_refused(shape, message):
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(PASNet(5, fusion='A').init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize('size', [7, 8, 13, 28, 56, 112])
def test_caffe_pooling_matches_torch_ceil_mode(size):
  x = np.random.default_rng(size).normal(size=(2, size, size + 1, 3)).astype(np.float32)
  x_torch = torch.from_numpy(x).permute(0, 3, 1, 2)
  cases = [
      (layers.max_pool_ceil(x, 3, 2), torch.nn.functional.max_pool2d(
          x_torch, 3, 2, 0, ceil_mode=True)),
      (layers.max_pool_ceil(x, 2, 2), torch.nn.functional.max_pool2d(
          x_torch, 2, 2, 0, ceil_mode=True)),
      (layers.avg_pool_ceil(x, 3, 1, 1), torch.nn.functional.avg_pool2d(
          x_torch, 3, 1, 1, ceil_mode=True, count_include_pad=True)),
      (layers.avg_pool_ceil(x, 3, 2, 1), torch.nn.functional.avg_pool2d(
          x_torch, 3, 2, 1, ceil_mode=True, count_include_pad=True)),
  ]
  for ours, reference in cases:
    np.testing.assert_allclose(np.asarray(ours),
                               reference.permute(0, 2, 3, 1).numpy(), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize('kernel,stride,pad,size', [(3, 2, 0, 13), (3, 2, 0, 14),
                                                    (2, 2, 0, 9), (3, 1, 1, 8)])
@pytest.mark.parametrize('values', ['normal', 'relu', 'integers'])
def test_max_pool_gradient_goes_where_torch_sends_it(kernel, stride, pad, size, values):
  # ReLU outputs and integers tie often inside a window: the gradient must
  # go to the first maximum in row-major order, as PyTorch's does, and
  # never be split.
  rng = np.random.default_rng(size)
  x = rng.normal(size=(2, size, size + 1, 3)).astype(np.float32)
  x = {'normal': x, 'relu': np.maximum(x, 0), 'integers': np.round(2 * x)}[values]
  pool = functools.partial(layers.max_pool_ceil, kernel=kernel, stride=stride, pad=pad)
  pooled, backward = jax.vjp(pool, jnp.asarray(x))
  upstream = rng.normal(size=pooled.shape).astype(np.float32)
  (grad,) = backward(jnp.asarray(upstream))

  x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_()
  torch.nn.functional.max_pool2d(x_torch, kernel, stride, pad, ceil_mode=True).backward(
      torch.from_numpy(upstream).permute(0, 3, 1, 2))
  np.testing.assert_allclose(np.asarray(grad), x_torch.grad.permute(0, 2, 3, 1).numpy(),
                             rtol=1e-6, atol=1e-6)


def test_pooling_rounds_up_where_floor_would_lose_a_row():
  assert layers.max_pool_ceil(np.zeros((1, 112, 112, 1)), 3, 2).shape[1] == 56
  assert layers.max_pool_ceil(np.zeros((1, 56, 56, 1)), 3, 2).shape[1] == 28


def test_channel_pool_matches_torch_adaptive_average():
  x = np.random.default_rng(0).normal(size=(3, 5, 128)).astype(np.float32)
  expected = torch.nn.functional.adaptive_avg_pool1d(torch.from_numpy(x), 96)
  np.testing.assert_allclose(np.asarray(fusion_lib.channel_pool(x)),
                             expected.numpy(), rtol=1e-6, atol=1e-6)


def test_batch_norm_updates_running_statistics_like_torch():
  x = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 5, 6)).astype(np.float32)
  bn = layers.BatchNorm()
  variables = bn.init(jax.random.PRNGKey(0), x, train=False)
  y, updates = bn.apply(variables, x, train=True, mutable=['batch_stats'])
  reference = torch.nn.BatchNorm2d(6, eps=1e-5, momentum=0.1)
  expected = reference(torch.from_numpy(x).permute(0, 3, 1, 2))
  np.testing.assert_allclose(np.asarray(y), expected.permute(0, 2, 3, 1).detach(),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['mean'],
                             reference.running_mean.numpy(), rtol=1e-5)
  np.testing.assert_allclose(updates['batch_stats']['var'],
                             reference.running_var.numpy(), rtol=1e-5)


def _loss_and_grads(model, variables, video):
  def loss(params):
    logits, _ = model.apply({'params': params,
                             'batch_stats': variables['batch_stats']}, video,
                            train=True, rngs={'dropout': jax.random.PRNGKey(0)},
                            mutable=['batch_stats'])
    return jnp.sum(logits * jnp.arange(NUM_CLASSES))
  return jax.jit(jax.value_and_grad(loss))(variables['params'])


def _abs_sum(tree):
  return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree)))


@pytest.mark.parametrize('style', fusion_lib.STYLES)
def test_every_style_trains_the_right_parts(style, video):
  model = PASNet(NUM_CLASSES, fusion=style, freeze_pose=True, bn_policy='partial')
  variables = variables_for(style)
  loss, grads = _loss_and_grads(model, variables, video)
  assert np.isfinite(float(loss))
  assert _abs_sum(grads['spatiotemporal']) > 0
  assert _abs_sum(grads['classifier']) > 0
  if 'appearance' in grads:
    # Partial BN: only the first BatchNorm trains, but every conv does.
    assert _abs_sum(grads['appearance']['conv1_7x7_s2']) > 0
    assert _abs_sum(grads['appearance']['inception_3c_double_3x3_1']) > 0
    assert _abs_sum(grads['appearance']['inception_3a_1x1_bn']) == 0
  if 'fusion' in grads:
    assert _abs_sum(grads['fusion']) > 0
  if 'pose' in grads:
    assert _abs_sum(grads['pose']) == 0


def test_unfrozen_pose_gets_gradients_and_frozen_skips_its_backward(video):
  style = 'A+pool(I)+pool(F)'
  variables = variables_for(style)
  _, grads = _loss_and_grads(PASNet(NUM_CLASSES, fusion=style, freeze_pose=False),
                             variables, video)
  assert _abs_sum(grads['pose']['conv1_1']) > 0

  def training_flops(freeze_pose):
    model = PASNet(NUM_CLASSES, fusion=style, freeze_pose=freeze_pose)

    def loss(params):
      logits, _ = model.apply({'params': params,
                               'batch_stats': variables['batch_stats']}, video,
                              train=True, rngs={'dropout': jax.random.PRNGKey(0)},
                              mutable=['batch_stats'])
      return jnp.sum(logits)
    return jax.jit(jax.grad(loss)).lower(variables['params']).cost_analysis()['flops']

  # The pose backward pass is about twice its forward pass; freezing must
  # remove it, not just zero its result.
  assert training_flops(True) < 0.5 * training_flops(False)


@pytest.mark.parametrize('style', ['conv(A,E*A)', 'conv(A,I)', 'conv(A,I,F)'])
def test_conv_styles_start_as_style_a(style, video):
  variables = variables_for(style)
  baseline = {key: {k: v for k, v in tree.items() if k not in ('pose', 'fusion')}
              for key, tree in variables.items()}
  ours = PASNet(NUM_CLASSES, fusion=style).apply(variables, video)
  style_a = PASNet(NUM_CLASSES, fusion='A').apply(baseline, video)
  np.testing.assert_allclose(ours, style_a, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_stays_close_to_float32(video):
  style = 'A+pool(I)+pool(F)'
  variables = variables_for(style)
  full = PASNet(NUM_CLASSES, fusion=style).apply(variables, video,
                                                method=PASNet.features)
  half = PASNet(NUM_CLASSES, fusion=style, dtype=jnp.bfloat16).apply(
      variables, video, method=PASNet.features)
  for name in ('appearance', 'implicit', 'fused', 'logits'):
    assert half[name].dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(full[name])))
    error = float(jnp.max(jnp.abs(half[name] - full[name])))
    assert error < 0.05 * scale, (name, error, scale)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda x: x.dtype == jnp.float32, variables))


@pytest.mark.parametrize('policy, changed', [
    ('frozen', set()),
    ('partial', {'conv1_7x7_s2_bn'}),
    ('trainable', 'all'),
])
def test_bn_policy_decides_which_statistics_move(policy, changed, video):
  frames = video.reshape(-1, 64, 64, 3)
  model = Appearance(bn_policy=policy)
  variables = random_variables(model, frames.shape)
  _, updates = model.apply(variables, frames, train=True, mutable=['batch_stats'])
  moved = {name for name, stats in updates['batch_stats'].items()
           if not np.allclose(stats['mean'], variables['batch_stats'][name]['mean'])}
  expected = set(variables['batch_stats']) if changed == 'all' else changed
  assert moved == expected


@pytest.mark.parametrize('policy, trains', [('partial', False),
                                             ('trainable', True)])
def test_3d_batchnorm_follows_the_policy(policy, trains):
  """Partial BN freezes every 3D BatchNorm too, as the authors' code does."""
  clips = np.random.default_rng(0).normal(size=(2, 4, 8, 8, 96)).astype(np.float32)
  model = Spatiotemporal(bn_policy=policy)
  variables = random_variables(model, clips.shape)

  def loss(params):
    pooled, updates = model.apply({'params': params,
                                   'batch_stats': variables['batch_stats']},
                                  clips, train=True, mutable=['batch_stats'])
    return jnp.sum(pooled ** 2), updates
  grads, updates = jax.grad(loss, has_aux=True)(variables['params'])
  assert _abs_sum(grads['res3a_2']) > 0
  assert (_abs_sum(grads['res3a_bn']) > 0) == trains
  moved = not np.allclose(updates['batch_stats']['res5b_bn']['var'],
                          variables['batch_stats']['res5b_bn']['var'])
  assert moved == trains


@pytest.mark.parametrize('layout, layers_only_here, biases', [
    ('official', {'res4a_down', 'res5a_down'}, True),
    ('early', {'res3a_1', 'res3a_1_bn'}, False),
])
def test_spatiotemporal_layouts(layout, layers_only_here, biases):
  clips = jax.ShapeDtypeStruct((1, 5, 8, 8, 96), jnp.float32)
  model = Spatiotemporal(layout=layout)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), clips)
  params = variables['params']
  other = Spatiotemporal(layout='early' if layout == 'official' else 'official')
  other_params = jax.eval_shape(other.init, jax.random.PRNGKey(0), clips)['params']
  assert set(params) - set(other_params) == layers_only_here
  assert params['res4a_1']['kernel'].shape == (3, 3, 3, 128, 256)
  assert ('bias' in params['res4a_1']) == biases
  assert spatiotemporal.layout_of(params) == layout
  out = jax.eval_shape(model.apply, variables, clips)
  assert out.shape == (1, 512)


@pytest.mark.parametrize('form', [layers.conv3d_as_2d, layers.conv3d_patches])
@pytest.mark.parametrize('frames, stride', [(4, 1), (5, 2), (2, 2), (1, 1)])
def test_3d_convolution_forms_equal_the_native_one(form, frames, stride):
  """The CPU's forms (a sum of 2D convolutions over the temporal taps; one
  matrix product of gathered neighbourhoods) against XLA's 3D convolution,
  which GPUs and TPUs run."""
  rng = np.random.default_rng(frames)
  x = rng.normal(size=(2, frames, 9, 8, 16)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, 3, 16, 8)).astype(np.float32)
  native = jax.lax.conv_general_dilated(
      x, kernel, (stride,) * 3, [(1, 1)] * 3,
      dimension_numbers=('NTHWC', 'THWIO', 'NTHWC'))
  other = form(x, kernel, stride, 1)
  assert other.shape == native.shape
  np.testing.assert_allclose(other, native, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('shape, stride, form', [
    ((8, 1, 2, 2, 512), 1, 'patches'),     # res5 at 64 x 64, batch 8: 32 positions
    ((1, 4, 28, 28, 128), 2, 'patches'),   # res4a at 224, K = 4: 392
    ((1, 4, 28, 28, 128), 1, 'as_2d'),     # res3 at 224, K = 4: 3136
])
def test_auto_picks_the_3d_form_by_output_positions(shape, stride, form):
  assert layers.conv3d_form('auto', shape, (3, 3, 3), stride, 1) == form
  assert layers.conv3d_form('native', shape, (3, 3, 3), stride, 1) == 'native'


def test_remat_changes_memory_not_results(video):
  frames = video.reshape(-1, 64, 64, 3)
  variables = random_variables(Appearance(), frames.shape)

  def grads(remat):
    # Train-mode BatchNorm over 8 frames amplifies the reordered sums'
    # rounding; partial BN keeps this a test of remat alone.
    model = Appearance(remat=remat, bn_policy='partial')

    def loss(params):
      out, _ = model.apply({'params': params,
                            'batch_stats': variables['batch_stats']}, frames,
                           train=True, mutable=['batch_stats'])
      return jnp.sum(out ** 2)
    return jax.jit(jax.grad(loss))(variables['params'])

  # Recomputation reorders float sums: compare against the gradients' scale.
  rematerialised, stored = (jax.flatten_util.ravel_pytree(grads(remat))[0]
                            for remat in (True, False))
  assert float(jnp.max(jnp.abs(rematerialised - stored))) <= (
      1e-5 * float(jnp.max(jnp.abs(stored))))
  pose_variables = random_variables(OpenPose(), frames.shape)
  np.testing.assert_allclose(
      OpenPose(remat=True).apply(pose_variables, frames)['implicit'],
      OpenPose().apply(pose_variables, frames)['implicit'], rtol=1e-5, atol=1e-5)


def test_fast_init_draws_what_model_init_draws():
  model = PASNet(NUM_CLASSES, fusion='conv(A,I,F)')
  ours = init_variables(model, 0, VIDEO_SHAPE)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct(VIDEO_SHAPE, jnp.float32))
  assert (jax.tree_util.tree_structure(ours) ==
          jax.tree_util.tree_structure(shapes))
  jax.tree_util.tree_map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype)
                         or pytest.fail(f'{a.shape} != {b.shape}'), ours, shapes)
  kernel = ours['params']['pose']['Mconv1_stage6_L1']['kernel']
  expected = np.sqrt(1.0 / np.prod(kernel.shape[:-1]))
  assert abs(kernel.std() / expected - 1) < 0.02
  assert np.abs(kernel).max() <= 2 * expected / 0.8796 + 1e-6
  assert np.all(ours['batch_stats']['appearance']['conv1_7x7_s2_bn']['var'] == 1)
  assert np.all(ours['params']['classifier']['bias'] == 0)
  classifier = ours['params']['classifier']['kernel']
  limit = np.sqrt(6.0 / sum(classifier.shape))
  assert np.abs(classifier).max() <= limit
  assert abs(classifier.std() / (limit / np.sqrt(3)) - 1) < 0.1
  fusion_kernel = ours['params']['fusion']['conv']['kernel']
  np.testing.assert_array_equal(fusion_kernel[0, 0, :96], np.eye(96))
  assert np.all(fusion_kernel[0, 0, 96:] == 0)
  # Seeded: the same seed gives the same weights, another seed others.
  again = init_variables(model, 0, VIDEO_SHAPE)
  np.testing.assert_array_equal(kernel, again['params']['pose']['Mconv1_stage6_L1']['kernel'])
  other = init_variables(model, 1, VIDEO_SHAPE)
  assert not np.array_equal(kernel, other['params']['pose']['Mconv1_stage6_L1']['kernel'])
