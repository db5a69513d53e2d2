"""The kernel-transform convolutions of frozen weights (FFT and Winograd,
models/transform_conv.py) and when the models take them. Parity with the
PyTorch references through these paths is in tests/test_parity.py."""

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


def transforms_taken(jaxpr) -> dict[str, int]:
  """How many convolutions of a jaxpr run through each transform."""
  text = str(jaxpr)
  return {'fft': text.count('name=fft_conv'),
          'winograd': text.count('name=winograd_conv')}


def prepared_kinds(transforms: dict) -> set[str]:
  """The transforms ('spectra', 'winograd') a TRANSFORMS collection holds."""
  return {str(path[-1].key) for path, _ in
          jax.tree_util.tree_flatten_with_path(transforms)[0]}


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


@pytest.mark.parametrize('height, width, in_features, out_features', [
    (28, 28, 512, 512),   # conv4_2 at 224: 7 x 7 tiles exactly
    (17, 9, 6, 5),        # sizes that leave part-filled tiles
    (2, 3, 3, 64),        # a map smaller than one tile
])
def test_winograd_conv_equals_the_direct_convolution(height, width, in_features,
                                                     out_features):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((2, height, width, in_features)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((3, 3, in_features, out_features)),
                       jnp.float32)
  transformed = transform_conv.winograd_kernels(kernel)
  assert transformed.shape == (36, in_features, out_features)
  y = transform_conv.winograd_conv(x, transformed)
  assert y.shape == (2, height, width, out_features)
  assert relative_error(y, direct_conv(x, kernel)) < 2e-5


def test_transform_memory_is_the_same_at_any_frame_size():
  """Per 7 x 7 kernel: frequencies x C_in x C_out complex64, from the fixed
  FFT window; OpenPose's fifty take 1.57 GB. Per 3 x 3 kernel: 36 x C_in x
  C_out float32; OpenPose's eighteen take 0.13 GB."""
  variables = random_variables(OpenPose(), (1, 32, 32, 3))
  spectra = transform_conv.prepare(variables['params'], kernel_sizes=(7,))
  assert len(jax.tree_util.tree_leaves(spectra)) == 50
  assert transform_conv.total_bytes(spectra) == 1_570_201_600
  assert transform_conv.spectra_bytes((7, 7, 128, 128)) == 20 * 11 * 128 * 128 * 8
  winograd = transform_conv.prepare(variables['params'], kernel_sizes=(3,))
  assert len(jax.tree_util.tree_leaves(winograd)) == 18
  assert transform_conv.total_bytes(winograd) == 131_558_400
  assert transform_conv.winograd_bytes((3, 3, 512, 512)) == 36 * 512 * 512 * 4
  both = transform_conv.prepare(variables['params'])
  assert transform_conv.total_bytes(both) == 1_570_201_600 + 131_558_400


def test_memory_limit_leaves_the_spectra_out_and_the_model_direct(prepared):
  variables = {k: v for k, v in prepared.items() if k != transform_conv.TRANSFORMS}
  small = with_pose_transforms(variables, memory_limit=10 * 2**20)
  assert transform_conv.TRANSFORMS not in small
  video = jnp.zeros(VIDEO_SHAPE)
  assert transforms_taken(jax.make_jaxpr(PASNet(5).apply)(small, video)) == {
      'fft': 0, 'winograd': 0}
  assert transforms_taken(jax.make_jaxpr(PASNet(5).apply)(prepared, video)) == {
      'fft': 50, 'winograd': 16}


# The 3 x 3 layers: 2 on the frames, 2 at 1/2, 4 at 1/4 (3 of them with 256
# channels in), and 4 of the front and 6 of stage 1 at 1/8; Winograd takes
# maps of at most 48 x 48, or 56 x 56 with 256 channels in or more.
@pytest.mark.parametrize('size, fft, winograd', [
    (64, 0, 16),     # 8 x 8 maps: FFT tiles 3.1 times their area
    (96, 50, 16),    # 12 x 12: 1.4 times; Winograd from the 48 x 48 maps
    (128, 0, 14),    # 16 x 16: 3.1 times; Winograd from 32 x 32
    (160, 50, 14),   # 20 x 20: 2.0 times; Winograd from 40 x 40
    (224, 50, 13),   # 28 x 28: 2 x 2 FFT tiles exactly; Winograd from conv3_2
])
def test_auto_takes_each_transform_where_it_measured_faster(prepared, size,
                                                            fft, winograd):
  shape = (1, 1, size, size, 3)
  jaxpr = jax.make_jaxpr(PASNet(5).apply)(prepared, jnp.zeros(shape))
  assert transforms_taken(jaxpr) == {'fft': fft, 'winograd': winograd}


@pytest.mark.parametrize('pose_conv, train, freeze_pose, taken', [
    ('auto', False, True, {'fft': 50, 'winograd': 16}),
    ('auto', True, True, {'fft': 50, 'winograd': 16}),
    # The pose trains: prepared transforms would hide its kernels.
    ('auto', True, False, {'fft': 0, 'winograd': 0}),
    ('direct', False, True, {'fft': 0, 'winograd': 0}),
    ('transform', False, True, {'fft': 50, 'winograd': 18}),
])
def test_auto_takes_the_transforms_only_for_a_frozen_pose(
    prepared, pose_conv, train, freeze_pose, taken):
  model = PASNet(5, pose_conv=pose_conv, freeze_pose=freeze_pose)
  apply = lambda v, x: model.apply(v, x, train=train, mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.PRNGKey(0)})
  assert transforms_taken(jax.make_jaxpr(apply)(
      prepared, jnp.zeros(VIDEO_SHAPE))) == taken


@pytest.mark.parametrize('size, pose_conv, train, freeze_pose, dtype', [
    (64, 'auto', False, True, jnp.float32),
    (96, 'auto', False, True, jnp.float32),
    (96, 'auto', True, True, jnp.float32),
    (96, 'auto', True, False, jnp.float32),
    (96, 'auto', False, True, jnp.bfloat16),
    (96, 'direct', False, True, jnp.float32),
    (64, 'transform', False, True, jnp.float32),
])
def test_transforms_are_prepared_exactly_where_the_model_runs_them(
    prepared, monkeypatch, size, pose_conv, train, freeze_pose, dtype):
  """pasnet.pose_transforms, which the training loop and the inference
  programs call, decides without running the model; it must agree with the
  model's own choice, kind by kind, or 1.6 GB of spectra would be prepared
  for nothing, or a transform never taken."""
  names = {7: 'spectra', 3: 'winograd'}

  def with_pose_transforms(variables, kernel_sizes):
    keep = {names[size] for size in kernel_sizes}
    pose = {layer: value for layer, value in
            prepared[transform_conv.TRANSFORMS]['pose'].items()
            if set(value) <= keep}
    return {**variables, transform_conv.TRANSFORMS: {'pose': pose}}
  monkeypatch.setattr(pasnet, 'with_pose_transforms', with_pose_transforms)
  model = PASNet(5, pose_conv=pose_conv, freeze_pose=freeze_pose, dtype=dtype)
  given = pasnet.pose_transforms(model, prepared, size, size, train)
  apply = lambda v, x: model.apply(v, x, train=train, mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.PRNGKey(0)})
  variables = {**prepared, **given} if given else {
      k: v for k, v in prepared.items() if k != transform_conv.TRANSFORMS}
  video = jnp.zeros((1, 1, size, size, 3))
  taken_given_all = transforms_taken(jax.make_jaxpr(apply)(prepared, video))
  kinds = {'fft': 'spectra', 'winograd': 'winograd'}
  assert prepared_kinds(given) == {kinds[kind] for kind, count
                                   in taken_given_all.items() if count}
  assert transforms_taken(jax.make_jaxpr(apply)(variables, video)) == taken_given_all
  assert not pasnet.pose_transforms(PASNet(5, fusion='A'), prepared, size,
                                    size, train)


def test_prepared_transforms_refused_when_the_pose_trains(prepared):
  model = PASNet(5, pose_conv='transform', freeze_pose=False)
  with pytest.raises(ValueError, match='would not train'):
    model.apply(prepared, jnp.zeros(VIDEO_SHAPE), train=True,
                mutable=['batch_stats'], rngs={'dropout': jax.random.PRNGKey(0)})


def test_forced_transform_without_preparing_matches_the_prepared_ones():
  """pose_conv "transform" with no prepared transforms computes them in the
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
  for layer in ('Mconv3_stage4_L2', 'conv3_2'):  # 7 x 7 and 3 x 3
    grads = {direct: jax.grad(loss)(variables['params'], direct)[layer]['kernel']
             for direct in (True, False)}
    assert float(jnp.max(jnp.abs(grads[True]))) > 0
    assert relative_error(grads[False], grads[True]) < 1e-4, layer
