"""The FFT convolutions of frozen weights (models/transform_conv.py) and when
the models take them. Parity with the PyTorch references through this path
is in tests/test_parity.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pasnet_jax.models import transform_conv
from pasnet_jax.models import pasnet
from pasnet_jax.models.pasnet import PASNet, with_pose_transforms
from pasnet_jax.models.pose import OpenPose
from tests.conftest import random_variables

# 12 x 12 stage maps, which "auto" sends through the FFT.
VIDEO_SHAPE = (1, 2, 96, 96, 3)


@pytest.fixture(scope='module')
def prepared():
  """PASNet variables with the pose spectra (the same at any frame size)."""
  return with_pose_transforms(random_variables(PASNet(5), VIDEO_SHAPE))


def direct_conv(x, kernel):
  pad = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), [(pad, pad), (pad, pad)],
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      precision=jax.lax.Precision.HIGHEST)


def relative_error(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) /
               np.max(np.abs(np.asarray(b))))


@pytest.mark.parametrize('height, width, in_features, out_features, kernel_size', [
    (28, 28, 128, 128, 7),   # a stage map at 224: 2 x 2 tiles exactly
    (23, 30, 5, 4, 7),       # sizes that leave part-filled tiles
    (8, 8, 185, 3, 7),       # a map smaller than one tile
    (17, 9, 6, 5, 3),
])
def test_fft_conv_equals_the_direct_convolution(height, width, in_features,
                                                out_features, kernel_size):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, height, width, in_features)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal(
      (kernel_size, kernel_size, in_features, out_features)), jnp.float32)
  spectra = transform_conv.kernel_spectra(kernel)
  assert spectra.shape == (transform_conv.num_frequencies(), in_features,
                           out_features)
  y = jax.jit(transform_conv.fft_conv, static_argnums=2)(x, spectra, kernel_size)
  assert y.shape == (2, height, width, out_features)
  assert relative_error(y, direct_conv(x, kernel)) < 1e-5


def test_spectra_memory_is_the_same_at_any_frame_size():
  """Per kernel: frequencies x C_in x C_out complex64, from the fixed FFT
  window; OpenPose's fifty 7 x 7 kernels take 1.57 GB."""
  variables = random_variables(OpenPose(), (1, 32, 32, 3))
  spectra = transform_conv.prepare(variables['params'])
  assert len(jax.tree_util.tree_leaves(spectra)) == 50
  assert transform_conv.total_bytes(spectra) == 1_570_201_600
  assert transform_conv.spectra_bytes((7, 7, 128, 128)) == 20 * 11 * 128 * 128 * 8


def test_memory_limit_leaves_the_spectra_out_and_the_model_direct(prepared):
  variables = {k: v for k, v in prepared.items() if k != transform_conv.TRANSFORMS}
  small = with_pose_transforms(variables, memory_limit=10 * 2**20)
  assert transform_conv.TRANSFORMS not in small
  video = jnp.zeros(VIDEO_SHAPE)
  assert 'fft' not in str(jax.make_jaxpr(PASNet(5).apply)(small, video))
  assert 'fft' in str(jax.make_jaxpr(PASNet(5).apply)(prepared, video))


@pytest.mark.parametrize('size, through_fft', [
    (64, False),    # 8 x 8 maps: tiles 3.1 times their area
    (96, True),     # 12 x 12: 1.4 times
    (128, False),   # 16 x 16: 3.1 times
    (160, True),    # 20 x 20: 2.0 times
    (224, True),    # 28 x 28: 2 x 2 tiles exactly
])
def test_auto_takes_the_fft_where_the_tiles_fit_the_maps(prepared, size,
                                                         through_fft):
  shape = (1, 1, size, size, 3)
  jaxpr = str(jax.make_jaxpr(PASNet(5).apply)(prepared, jnp.zeros(shape)))
  assert ('fft' in jaxpr) == through_fft


@pytest.mark.parametrize('pose_conv, train, freeze_pose, through_fft', [
    ('auto', False, True, True),
    ('auto', True, True, True),
    ('auto', True, False, False),   # the pose trains: spectra would hide it
    ('direct', False, True, False),
    ('transform', False, True, True),
])
def test_auto_takes_the_fft_only_for_a_frozen_pose(prepared, pose_conv, train,
                                                   freeze_pose, through_fft):
  model = PASNet(5, pose_conv=pose_conv, freeze_pose=freeze_pose)
  apply = lambda v, x: model.apply(v, x, train=train, mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.PRNGKey(0)})
  jaxpr = str(jax.make_jaxpr(apply)(prepared, jnp.zeros(VIDEO_SHAPE)))
  assert ('fft' in jaxpr) == through_fft


@pytest.mark.parametrize('size, pose_conv, train, freeze_pose, dtype', [
    (64, 'auto', False, True, jnp.float32),
    (96, 'auto', False, True, jnp.float32),
    (96, 'auto', True, True, jnp.float32),
    (96, 'auto', True, False, jnp.float32),
    (96, 'auto', False, True, jnp.bfloat16),
    (96, 'direct', False, True, jnp.float32),
    (64, 'transform', False, True, jnp.float32),
])
def test_spectra_are_prepared_exactly_where_the_model_runs_them(
    prepared, monkeypatch, size, pose_conv, train, freeze_pose, dtype):
  """pasnet.pose_transforms, which the training loop and the inference
  programs call, decides without running the model; it must agree with the
  model's own choice, or 1.6 GB would be prepared for nothing, or the FFT
  never taken."""
  monkeypatch.setattr(pasnet, 'with_pose_transforms', lambda variables: prepared)
  model = PASNet(5, pose_conv=pose_conv, freeze_pose=freeze_pose, dtype=dtype)
  given = pasnet.pose_transforms(model, prepared, size, size, train)
  apply = lambda v, x: model.apply(v, x, train=train, mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.PRNGKey(0)})
  variables = {**prepared, **given} if given else {
      k: v for k, v in prepared.items() if k != transform_conv.TRANSFORMS}
  video = jnp.zeros((1, 1, size, size, 3))
  runs_fft_given_spectra = 'fft' in str(jax.make_jaxpr(apply)(prepared, video))
  assert bool(given) == runs_fft_given_spectra
  assert ('fft' in str(jax.make_jaxpr(apply)(variables, video))) == bool(given)
  assert not pasnet.pose_transforms(PASNet(5, fusion='A'), prepared, size,
                                    size, train)


def test_prepared_spectra_refused_when_the_pose_trains(prepared):
  model = PASNet(5, pose_conv='transform', freeze_pose=False)
  with pytest.raises(ValueError, match='would not train'):
    model.apply(prepared, jnp.zeros(VIDEO_SHAPE), train=True,
                mutable=['batch_stats'], rngs={'dropout': jax.random.PRNGKey(0)})


def test_forced_transform_without_spectra_matches_the_prepared_ones():
  """pose_conv "transform" with no prepared spectra computes them in the
  call; the kernels then get a gradient, as through the direct convolution."""
  model = OpenPose(conv_form='transform')
  variables = random_variables(OpenPose(), (1, 32, 32, 3))
  frames = jnp.asarray(np.random.default_rng(2).uniform(0, 255, (1, 32, 32, 3)),
                       jnp.float32)
  prepared = {**variables,
              transform_conv.TRANSFORMS: transform_conv.prepare(variables['params'])}
  in_call = model.apply(variables, frames)['heatmap']
  assert relative_error(in_call, model.apply(prepared, frames)['heatmap']) < 1e-5

  def loss(params, direct):
    form = OpenPose(conv_form='direct') if direct else model
    return jnp.sum(form.apply({'params': params}, frames)['heatmap'])
  layer = 'Mconv3_stage4_L2'
  grads = {direct: jax.grad(loss)(variables['params'], direct)[layer]['kernel']
           for direct in (True, False)}
  assert float(jnp.max(jnp.abs(grads[True]))) > 0
  assert relative_error(grads[False], grads[True]) < 1e-4
