"""Random PyTorch reference models saved the way users hold them, and the
converter command lines, for the converter and parity tests."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
# ECO-pytorch's main.py saves this around the (DataParallel) state dict.
TRAINING_CHECKPOINT = {'epoch': 40, 'arch': 'ECO', 'best_prec1': 90.2}


@torch.no_grad()
def randomize(model, seed):
  """Random weights that keep the signal alive through deep stacks.

  He-normal convolutions (variance preserved through ReLUs, so OpenPose's
  60 layers neither vanish nor explode), small random biases, and random
  BatchNorm scale/offset so that a port mixing them up shows.
  """
  generator = torch.Generator().manual_seed(seed)
  for module in model.modules():
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
      fan_in = module.weight[0].numel()
      module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
      if module.bias is not None:
        module.bias.normal_(0.0, 0.1, generator=generator)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
      module.weight.uniform_(0.5, 1.5, generator=generator)
      module.bias.normal_(0.0, 0.2, generator=generator)
  return model


def random_video(batch, frames, size, seed):
  """(B, K, H, W, 3) RGB 0..255 float32, smooth enough to look like images.

  Coarse noise upsampled, so that neighbouring pixels correlate as in
  natural frames and the colour channels differ from one another.
  """
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, (batch, frames, size // 8, size // 8, 3))
  video = coarse.repeat(8, axis=2).repeat(8, axis=3)
  video += rng.normal(0, 20, video.shape)
  return np.clip(video, 0, 255).astype(np.float32)


def to_torch_video(video):
  """(B, K, H, W, 3) numpy -> (B, 3, K, H, W) torch, the reference's NCTHW."""
  return torch.from_numpy(np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3)))


def to_torch_frames(frames):
  """(N, H, W, 3) numpy -> (N, 3, H, W) torch."""
  return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))


def nhwc(tensor):
  """A reference output as a numpy array in Flax's layout (channels last)."""
  array = tensor.detach().numpy()
  return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def save_eco(eco, path, layout):
  """Saves a torch_models.ECO as a user's file of the given layout.

  'tsn': ECO-pytorch's training checkpoint, DataParallel keys module.*;
  'tsn_without_module': the same saved from the unwrapped model;
  'bare': the DataParallel state dict alone;
  'kinetics': the classifier named base_model.fc_final, keys module.*;
  'tsn_legacy_file': 'tsn' in the pre-1.6 (non-zip) file format that
  checkpoints from ECO-pytorch's time are in.
  """
  state = eco.state_dict()
  if layout == 'kinetics':
    state = {
        key.replace('new_fc.', 'base_model.fc_final.'): value
        for key, value in state.items()
    }
  if layout != 'tsn_without_module':
    state = {f'module.{key}': value for key, value in state.items()}
  contents = state if layout == 'bare' else {
      **TRAINING_CHECKPOINT, 'state_dict': state
  }
  torch.save(
      contents,
      path,
      _use_new_zipfile_serialization=layout != 'tsn_legacy_file')
  return path


def nested_openpose_key(flat_key):
  """pytorch-openpose's nested key: model0 holds the VGG front,
  model<stage>_<branch> the branches of each stage."""
  layer = flat_key.split('.')[0]
  branch = layer[-1] if layer.endswith(('_L1', '_L2')) else None
  if branch is None:
    return f'model0.{flat_key}'
  stage = layer.split('_stage')[1][0] if '_stage' in layer else '1'
  return f'model{stage}_{branch}.{flat_key}'


def save_openpose(openpose, path, layout='flat'):
  """Saves a torch_models.OpenPose as body_pose_model.pth ('flat') or in
  the nested model0./model1_1./... form ('nested')."""
  state = openpose.state_dict()
  if layout == 'nested':
    state = {nested_openpose_key(key): value for key, value in state.items()}
  torch.save(state, path)
  return path


def run_converter(module, *args):
  """Runs `python -m convert.<module> args...` as a user would."""
  return subprocess.run(
      [sys.executable, '-m', f'convert.{module}', *map(str, args)],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=600)


def relative_error(actual, reference):
  """max |actual - reference| / max |reference|."""
  actual, reference = np.asarray(actual,
                                 np.float64), np.asarray(reference, np.float64)
  return float(np.max(np.abs(actual - reference)) / np.max(np.abs(reference)))
