"""The Flax models, loaded through the converters, against the PyTorch
references written from the public code (docs/architecture.md).

Random weights go into the reference, its BatchNorm statistics come from
one train-mode pass over another clip (otherwise the signal dies out and a
wrong port passes), it is saved in the users' formats, converted with the
command lines, and compared in float32: logits, OpenPose maps and every tap
within 1e-4 of the reference's largest magnitude, for both ECO layouts,
both forms of the 3D convolution and both forms of OpenPose's 7 x 7 and
3 x 3 convolutions (direct, and the FFT and Winograd with prepared kernel
transforms). The classic port mistakes are kept as tests: each, made in the
reference, must move an output past the bar.
"""

import copy

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest
import torch

from convert import torch_models
from convert.torch_io import flax_array
from pasnet_jax.models import spatiotemporal
from pasnet_jax.models import transform_conv
from pasnet_jax.models.fusion import Fusion
from pasnet_jax.models.pasnet import PASNet, with_pose_transforms
from pasnet_jax.models.pose import OpenPose
from tests import torch_helpers as th

TOLERANCE = 1e-4
# Each port mistake below moves an output by 0.5 % or more (measured).
MISTAKE_EFFECT = 5e-3
NUM_CLASSES = 5
FRAMES = 4
BATCH = 2
BEST_STYLE = 'A+pool(I)+pool(F)'
BACKGROUND = 18
# Added to the reference's background heatmap bias: real weights make that
# map the largest almost everywhere, random ones almost nowhere.
BACKGROUND_BIAS = 3.0


def convert(*args):
  result = th.run_converter(*args)
  assert result.returncode == 0, result.stderr
  return result


def restore(directory):
  return ocp.StandardCheckpointer().restore(directory.absolute())


def reference_outputs(model, video):
  with torch.no_grad():
    return {
        name: th.nhwc(value)
        for name, value in model.features(th.to_torch_video(video)).items()
    }


def layout_model(variables, fusion, **kwargs):
  """PASNet in the ECO layout the converted `variables` hold."""
  layout = spatiotemporal.layout_of(variables['params']['spatiotemporal'])
  return PASNet(NUM_CLASSES, fusion, eco_layout=layout, **kwargs)


def flax_features(model, variables, video):
  apply = jax.jit(lambda v, x: model.apply(v, x, method=PASNet.features))
  return jax.device_get(apply(variables, jnp.asarray(video)))


def variables_for(pose_conv, variables):
  """`variables`, with the pose transforms prepared for the transform form."""
  if pose_conv == 'direct':
    return variables
  return with_pose_transforms(variables)


def through_transforms(model, variables, video):
  """(whether some convolution runs through the FFT, whether some runs
  through Winograd)."""
  jaxpr = str(jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, video))
  return 'name=fft_conv' in jaxpr, 'name=winograd_conv' in jaxpr


def assert_close(outputs, reference, names):
  errors = {
      name: th.relative_error(outputs[name], reference[name]) for name in names
  }
  assert max(errors.values()) < TOLERANCE, errors


def build_eco_case(directory, size, layout):
  """ECO alone (fusion A): reference, ECO-pytorch file, converted variables."""
  eco = th.randomize(torch_models.ECO(NUM_CLASSES, layout=layout), seed=0)
  torch_models.calibrate_batchnorm(
      eco, th.to_torch_video(th.random_video(BATCH, FRAMES, size, seed=1)))
  video = th.random_video(BATCH, FRAMES, size, seed=2)
  checkpoint = th.save_eco(eco, directory / 'eco.pth.tar', 'tsn')
  result = convert('eco', checkpoint, directory / 'eco_out', '--num-classes',
                   NUM_CLASSES)
  assert f'ECO layout {layout}' in result.stdout
  return {
      'layout': layout,
      'torch_model': eco,
      'video': video,
      'reference': reference_outputs(eco, video),
      'variables': restore(directory / 'eco_out')
  }


def build_pasnet_case(directory, size, batch, layout='official'):
  """Full PAS-Net (best style) from an ECO file and a body_pose_model.pth.

  The reference is calibrated as a whole, so that the 3D part's statistics
  are those of the fused maps it receives.
  """
  reference = th.randomize(
      torch_models.PASNet(NUM_CLASSES, BEST_STYLE, layout=layout), seed=3)
  with torch.no_grad():
    reference.openpose.Mconv7_stage6_L2.bias[BACKGROUND] += BACKGROUND_BIAS
  torch_models.calibrate_batchnorm(
      reference,
      th.to_torch_video(th.random_video(batch, FRAMES, size, seed=4)))
  video = th.random_video(batch, FRAMES, size, seed=5)
  eco_file = th.save_eco(reference.eco, directory / 'eco.pth.tar', 'tsn')
  openpose_file = th.save_openpose(reference.openpose,
                                   directory / 'body_pose_model.pth')
  convert('eco', eco_file, directory / 'eco_out')
  convert('openpose', openpose_file, directory / 'openpose_out')
  convert('pasnet', '--eco', directory / 'eco_out', '--openpose',
          directory / 'openpose_out', '--fusion', BEST_STYLE, '--num-classes',
          NUM_CLASSES, directory / 'pasnet_out')
  return {
      'video': video,
      'torch_model': reference,
      'reference': reference_outputs(reference, video),
      'torch_openpose': reference.openpose,
      'variables': restore(directory / 'pasnet_out'),
      'openpose_variables': restore(directory / 'openpose_out')
  }


@pytest.fixture(scope='module')
def eco_cases(module_tmp):
  """eco_cases(layout) -> that layout's case, built once per module."""
  cases = {}

  def case(layout):
    if layout not in cases:
      cases[layout] = build_eco_case(
          module_tmp(f'eco_parity_{layout}'), 64, layout)
    return cases[layout]
  return case


@pytest.fixture(scope='module')
def pasnet_case(module_tmp):
  return build_pasnet_case(
      module_tmp('pasnet_parity'), size=64, batch=BATCH)


@pytest.fixture(scope='module')
def pasnet_outputs(pasnet_case):
  return flax_features(
      layout_model(pasnet_case['variables'], BEST_STYLE),
      pasnet_case['variables'], pasnet_case['video'])


@pytest.mark.parametrize('layout', spatiotemporal.LAYOUTS)
@pytest.mark.parametrize('conv3d', ('as_2d', 'patches', 'native'))
def test_eco_matches_reference(eco_cases, layout, conv3d):
  """Both layouts; the 3D convolutions in both of the CPU's forms and as
  XLA's native 3D convolution (what GPUs and TPUs run)."""
  eco_case = eco_cases(layout)
  model = layout_model(eco_case['variables'], 'A', conv3d=conv3d)
  assert model.eco_layout == eco_case['layout']
  outputs = flax_features(model, eco_case['variables'], eco_case['video'])
  assert outputs['appearance'].shape == (BATCH * FRAMES, 8, 8, 96)
  assert_close(outputs, eco_case['reference'],
               ['appearance', 'pooled', 'logits'])


def test_pasnet_matches_reference(pasnet_case, pasnet_outputs):
  reference = pasnet_case['reference']
  assert set(reference) <= set(pasnet_outputs)
  assert_close(pasnet_outputs, reference, sorted(reference))


def test_pasnet_matches_reference_through_the_transforms(pasnet_case):
  """Forced: at 64 x 64 "auto" keeps the direct convolution for the 7 x 7
  layers (8 x 8 maps would fill a third of the FFT's tiles) and for the
  3 x 3 layers on the 64 x 64 frames; "transform" takes every one."""
  variables = variables_for('transform', pasnet_case['variables'])
  model = layout_model(variables, BEST_STYLE, pose_conv='transform')
  assert through_transforms(model, variables, pasnet_case['video']) == (True, True)
  outputs = flax_features(model, variables, pasnet_case['video'])
  reference = pasnet_case['reference']
  assert_close(outputs, reference, sorted(reference))


@pytest.mark.parametrize('pose_conv', ('direct', 'transform'))
def test_openpose_alone_matches_reference(pasnet_case, pose_conv):
  frames = pasnet_case['video'][0]
  with torch.no_grad():
    expected = {
        name: th.nhwc(value) for name, value in pasnet_case['torch_openpose'](
            th.to_torch_frames(frames)).items()
    }
  variables = pasnet_case['openpose_variables']
  if pose_conv == 'transform':
    variables = {**variables, transform_conv.TRANSFORMS:
                 transform_conv.prepare(variables['params'])}
  model = OpenPose(conv_form=pose_conv)
  assert through_transforms(model, variables, frames) == (
      (pose_conv == 'transform',) * 2)
  outputs = jax.jit(model.apply)(variables, jnp.asarray(frames))
  assert set(outputs) == set(expected)
  assert outputs['explicit'].shape == (FRAMES, 8, 8, 1)
  assert_close(jax.device_get(outputs), expected, sorted(expected))


def test_parity_check_catches_a_colour_order_mistake(pasnet_case):
  """Fed BGR where RGB is due (as a port with the channels the wrong way
  round would be), the outputs miss the reference by far more than the
  tolerance: the comparison above has teeth."""
  swapped = pasnet_case['video'][..., ::-1].copy()
  outputs = flax_features(
      layout_model(pasnet_case['variables'], BEST_STYLE),
      pasnet_case['variables'], swapped)
  reference = pasnet_case['reference']
  for name in ('appearance', 'implicit', 'paf_features', 'heatmap', 'logits'):
    assert th.relative_error(outputs[name],
                             reference[name]) > MISTAKE_EFFECT, name


@pytest.mark.parametrize('style', torch_models.FUSION_STYLES)
def test_fusion_style_matches_reference(pasnet_outputs, style):
  """Each Table II style, on the taps of the PAS-Net case, as the reference
  fuses them (lambdas, channel-pool bins, concatenation order)."""
  taps = {
      name: pasnet_outputs[name]
      for name in ('appearance', 'implicit', 'paf_features', 'explicit')
  }
  conv = None
  variables = {}
  if style.startswith('conv('):
    conv = torch.nn.Conv2d(torch_models.fusion_input_channels(style), 96, 1)
    torch.nn.init.normal_(
        conv.weight, 0.0, 0.1, generator=torch.Generator().manual_seed(6))
    variables = {
        'params': {
            'conv': {
                'kernel': flax_array('kernel', conv.weight),
                'bias': flax_array('bias', conv.bias)
            }
        }
    }
  to_nchw = lambda array: torch.tensor(array.transpose(0, 3, 1, 2))
  with torch.no_grad():
    expected = th.nhwc(
        torch_models.fuse(
            style,
            to_nchw(taps['appearance']), {
                name: to_nchw(value) for name, value in taps.items()
            },
            conv=conv))
  pose = {
      name: jnp.asarray(value)
      for name, value in taps.items()
      if name != 'appearance'
  }
  fused = Fusion(style=style).apply(variables, jnp.asarray(taps['appearance']),
                                    pose)
  assert th.relative_error(fused, expected) < TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize('pose_conv', ('direct', 'transform'))
@pytest.mark.parametrize('layout', spatiotemporal.LAYOUTS)
def test_pasnet_matches_reference_at_full_size(tmp_path, layout, pose_conv):
  """224 x 224 and K = 4: the reference pools with the authors' (K/4, 7, 7)
  window itself. The FFT form runs on 2 x 2 tiles of each 28 x 28 map;
  the transform form takes Winograd for every 3 x 3 layer."""
  case = build_pasnet_case(tmp_path, size=224, batch=1, layout=layout)
  variables = variables_for(pose_conv, case['variables'])
  model = layout_model(variables, BEST_STYLE, pose_conv=pose_conv)
  assert through_transforms(model, variables, case['video']) == (
      (pose_conv == 'transform',) * 2)
  outputs = flax_features(model, variables, case['video'])
  assert outputs['appearance'].shape == (FRAMES, 28, 28, 96)
  assert outputs['implicit'].shape == (FRAMES, 28, 28, 128)
  assert_close(outputs, case['reference'], sorted(case['reference']))


# ---------------------------------------------------------------- mistakes


def _differs(outputs, reference, names):
  """Whether any of `names` misses the reference past MISTAKE_EFFECT."""
  for name in names:
    if outputs[name].shape != reference[name].shape:
      return True
    if th.relative_error(outputs[name], reference[name]) > MISTAKE_EFFECT:
      return True
  return False


def _post_bn_skips(model):
  """The residual sums read the BatchNorm'd maps instead of the pre-BN ones."""
  after_bn = {'res3a_2': 'res3a_bn', 'res4a': 'res4a_bn', 'res5a': 'res5a_bn'}
  model.base_model.graph = tuple(
      (op, name, source, after_bn.get(rest[0], rest[0])) if op == 'add' else
      (op, name, source, *rest) for op, name, source, *rest in model.base_model.graph)


def _zeroed(model, names, leaves):
  with torch.no_grad():
    for name in names:
      for leaf in leaves:
        getattr(getattr(model.base_model, name), leaf).zero_()


def _bn_eps(model):
  for module in model.modules():
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
      module.eps = 1e-3


def _wrapped(function, **overrides):
  return lambda *args, **kwargs: function(*args, **{**kwargs, **overrides})


ECO_MISTAKES = {
    'mean in RGB order': lambda model, patch: patch.setattr(
        torch_models, 'BGR_MEAN', tuple(reversed(torch_models.BGR_MEAN))),
    'floor pooling': lambda model, patch: patch.setattr(
        torch_models.F, 'max_pool2d',
        _wrapped(torch_models.F.max_pool2d, ceil_mode=False)),
    'average pooling without the padding': lambda model, patch: patch.setattr(
        torch_models.F, 'avg_pool2d',
        _wrapped(torch_models.F.avg_pool2d, count_include_pad=False)),
    'BatchNorm eps 1e-3': lambda model, patch: _bn_eps(model),
    'post-BN skip path': lambda model, patch: _post_bn_skips(model),
    'shortcut missing': lambda model, patch: _zeroed(
        model, ('res4a_down', 'res5a_down'), ('weight', 'bias')),
    '3D bias missing': lambda model, patch: _zeroed(
        model, [name for op, name, *_ in model.base_model.graph if op == 'conv'],
        ('bias',)),
}


@pytest.mark.parametrize('mistake', sorted(ECO_MISTAKES))
def test_each_eco_port_mistake_misses_the_reference(eco_cases, mistake,
                                                    monkeypatch):
  """Made in the official reference, each mistake moves the outputs past the
  bar that the converted Flax model stays within (test_eco_matches_reference):
  the parity test would catch it in the port."""
  eco_case = eco_cases('official')
  mistaken = copy.deepcopy(eco_case['torch_model'])
  ECO_MISTAKES[mistake](mistaken, monkeypatch)
  outputs = reference_outputs(mistaken, eco_case['video'])
  assert _differs(outputs, eco_case['reference'],
                  ['appearance', 'pooled', 'logits']), mistake


def test_background_heatmap_is_the_largest_almost_everywhere(pasnet_case):
  """As with real weights, so that x_E over all 19 channels would differ."""
  heatmap = pasnet_case['reference']['heatmap']
  assert (heatmap.argmax(-1) == BACKGROUND).mean() > 0.9


def test_explicit_tap_over_all_19_channels_misses_the_reference(
    pasnet_case, pasnet_outputs, monkeypatch):
  monkeypatch.setattr(torch_models, 'NUM_KEYPOINTS', 19)
  mistaken = reference_outputs(pasnet_case['torch_model'], pasnet_case['video'])
  assert th.relative_error(pasnet_outputs['explicit'],
                           mistaken['explicit']) > MISTAKE_EFFECT
