"""The Flax models, loaded through the converters, against the PyTorch
reference written from ARCHITECTURE.md.

Random weights go into the reference, its BatchNorm statistics come from
one train-mode pass over another clip (otherwise the signal dies out and a
wrong port passes), it is saved in the users' formats, converted with the
command lines, and compared in float32: logits, OpenPose maps and every tap
within 1e-4 of the reference's largest magnitude.
"""

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest
import torch

from convert import torch_models
from convert.torch_io import flax_array
from pasnet_jax.models.fusion import Fusion
from pasnet_jax.models.pasnet import PASNet
from pasnet_jax.models.pose import OpenPose
from tests import torch_helpers as th

TOLERANCE = 1e-4
# ARCHITECTURE.md: each listed port mistake moves outputs by 0.5 % or more.
MISTAKE_EFFECT = 5e-3
NUM_CLASSES = 5
FRAMES = 4
BATCH = 2
BEST_STYLE = 'A+pool(I)+pool(F)'


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


def flax_features(model, variables, video):
  apply = jax.jit(lambda v, x: model.apply(v, x, method=PASNet.features))
  return jax.device_get(apply(variables, jnp.asarray(video)))


def assert_close(outputs, reference, names):
  errors = {
      name: th.relative_error(outputs[name], reference[name]) for name in names
  }
  assert max(errors.values()) < TOLERANCE, errors


def build_eco_case(directory, size):
  """ECO alone (fusion A): reference, ECO-pytorch file, converted variables."""
  eco = th.randomize(torch_models.ECO(NUM_CLASSES), seed=0)
  torch_models.calibrate_batchnorm(
      eco, th.to_torch_video(th.random_video(BATCH, FRAMES, size, seed=1)))
  video = th.random_video(BATCH, FRAMES, size, seed=2)
  checkpoint = th.save_eco(eco, directory / 'eco.pth.tar', 'tsn')
  convert('eco', checkpoint, directory / 'eco_out', '--num-classes',
          NUM_CLASSES)
  return {
      'video': video,
      'reference': reference_outputs(eco, video),
      'variables': restore(directory / 'eco_out')
  }


def build_pasnet_case(directory, size, batch):
  """Full PAS-Net (best style) from an ECO file and a body_pose_model.pth.

  The reference is calibrated as a whole, so that the 3D part's statistics
  are those of the fused maps it receives.
  """
  reference = th.randomize(torch_models.PASNet(NUM_CLASSES, BEST_STYLE), seed=3)
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
      'reference': reference_outputs(reference, video),
      'torch_openpose': reference.openpose,
      'variables': restore(directory / 'pasnet_out'),
      'openpose_variables': restore(directory / 'openpose_out')
  }


@pytest.fixture(scope='module')
def eco_case(tmp_path_factory):
  return build_eco_case(tmp_path_factory.mktemp('eco_parity'), size=64)


@pytest.fixture(scope='module')
def pasnet_case(tmp_path_factory):
  return build_pasnet_case(
      tmp_path_factory.mktemp('pasnet_parity'), size=64, batch=BATCH)


@pytest.fixture(scope='module')
def pasnet_outputs(pasnet_case):
  return flax_features(
      PASNet(NUM_CLASSES, BEST_STYLE), pasnet_case['variables'],
      pasnet_case['video'])


def test_eco_matches_reference(eco_case):
  outputs = flax_features(
      PASNet(NUM_CLASSES, 'A'), eco_case['variables'], eco_case['video'])
  assert outputs['appearance'].shape == (BATCH * FRAMES, 8, 8, 96)
  assert_close(outputs, eco_case['reference'],
               ['appearance', 'pooled', 'logits'])


def test_pasnet_matches_reference(pasnet_case, pasnet_outputs):
  reference = pasnet_case['reference']
  assert set(reference) <= set(pasnet_outputs)
  assert_close(pasnet_outputs, reference, sorted(reference))


def test_openpose_alone_matches_reference(pasnet_case):
  frames = pasnet_case['video'][0]
  with torch.no_grad():
    expected = {
        name: th.nhwc(value) for name, value in pasnet_case['torch_openpose'](
            th.to_torch_frames(frames)).items()
    }
  outputs = jax.jit(OpenPose().apply)(pasnet_case['openpose_variables'],
                                      jnp.asarray(frames))
  assert set(outputs) == set(expected)
  assert outputs['explicit'].shape == (FRAMES, 8, 8, 1)
  assert_close(jax.device_get(outputs), expected, sorted(expected))


def test_parity_check_catches_a_colour_order_mistake(pasnet_case):
  """Fed BGR where RGB is due (as a port with the channels the wrong way
  round would be), the outputs miss the reference by far more than the
  tolerance: the comparison above has teeth."""
  swapped = pasnet_case['video'][..., ::-1].copy()
  outputs = flax_features(
      PASNet(NUM_CLASSES, BEST_STYLE), pasnet_case['variables'], swapped)
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
def test_pasnet_matches_reference_at_full_size(tmp_path):
  case = build_pasnet_case(tmp_path, size=224, batch=1)
  outputs = flax_features(
      PASNet(NUM_CLASSES, BEST_STYLE), case['variables'], case['video'])
  assert outputs['appearance'].shape == (FRAMES, 28, 28, 96)
  assert outputs['implicit'].shape == (FRAMES, 28, 28, 128)
  assert_close(outputs, case['reference'], sorted(case['reference']))
