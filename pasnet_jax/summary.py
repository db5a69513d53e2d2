"""Parameters and FLOPs of each part of PAS-Net.

  python -m pasnet_jax.summary --fusion='A+pool(I)+pool(F)' --frames=8 --size=224

FLOPs come from XLA's cost analysis of each part's jitted forward pass on one
clip (the 2D parts on its K frames), so they count what the compiled program
does, multiply and add counted separately.
"""

import functools

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from pasnet_jax.models import fusion as fusion_lib
from pasnet_jax.models.appearance import Appearance
from pasnet_jax.models.fusion import Fusion
from pasnet_jax.models.pasnet import PASNet
from pasnet_jax.models.pose import OpenPose
from pasnet_jax.models.spatiotemporal import Spatiotemporal

_FUSION = flags.DEFINE_enum('fusion', 'A+pool(I)+pool(F)', fusion_lib.STYLES,
                            'Fusion style (Table II name).')
_FRAMES = flags.DEFINE_integer('frames', 8, 'Frames per clip, K.')
_SIZE = flags.DEFINE_integer('size', 224, 'Frame height and width.')
_CLASSES = flags.DEFINE_integer('num_classes', 101, 'Classifier size.')


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _flops(fn, *args) -> float:
  """FLOPs of `fn(*args)` by XLA's cost analysis, without running it."""
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  return float(cost.get('flops', 0.0)) if cost else 0.0


def part_table(fusion: str, frames: int, size: int,
               num_classes: int) -> list[tuple[str, int, float]]:
  """Rows (part, parameters, forward FLOPs for one clip of `frames` frames).

  FLOPs are those of the native 3D convolutions: the CPU's sum of 2D ones
  also convolves the zero-padded frames, 15 % more work in the 3D part.
  """
  model = PASNet(num_classes, fusion=fusion, conv3d='native')
  video = jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), video)
  features = jax.eval_shape(functools.partial(model.apply, method=PASNet.features),
                            variables, video)
  frame_batch = jax.ShapeDtypeStruct((frames, size, size, 3), jnp.float32)

  def part(name):
    return {kind: tree[name] for kind, tree in variables.items() if name in tree}

  rows = []
  if fusion_lib.uses_appearance(fusion):
    rows.append(('appearance (BN-Inception 2D)', _count(variables['params'].get('appearance', {})),
                 _flops(Appearance().apply, part('appearance'), frame_batch)))
  if fusion_lib.uses_pose(fusion):
    rows.append(('pose (OpenPose)', _count(variables['params'].get('pose', {})),
                 _flops(OpenPose().apply, part('pose'), frame_batch)))
  appearance = features.get('appearance')
  pose = ({k: features[k] for k in ('implicit', 'paf_features', 'explicit')}
          if fusion_lib.uses_pose(fusion) else None)
  rows.append((f'fusion {fusion}', _count(variables['params'].get('fusion', {})),
               _flops(lambda v, a, p: Fusion(fusion).apply(v, a, p),
                      part('fusion'), appearance, pose)))
  clips = jax.ShapeDtypeStruct((1, frames) + features['fused'].shape[1:],
                               jnp.float32)
  rows.append(('spatiotemporal (3D ResNet-18)', _count(variables['params'].get('spatiotemporal', {})),
               _flops(Spatiotemporal(conv3d='native').apply,
                      part('spatiotemporal'), clips)))
  rows.append(('classifier', _count(variables['params'].get('classifier', {})),
               2.0 * 512 * num_classes))
  rows.append(('total (PASNet, one jit)', _count(variables['params']),
               _flops(model.apply, variables, video)))
  return rows


def format_table(rows, fusion: str, frames: int, size: int) -> str:
  lines = [f'PAS-Net, fusion {fusion}, one clip of K={frames} frames at '
           f'{size} x {size}',
           f'{"part":<34}{"parameters":>14}{"GFLOPs":>12}{"share":>8}']
  total = rows[-1][2] or 1.0
  for name, params, flops in rows:
    lines.append(f'{name:<34}{params:>14,}{flops / 1e9:>12.2f}'
                 f'{100 * flops / total:>7.1f}%')
  return '\n'.join(lines)


def main(argv):
  del argv
  rows = part_table(_FUSION.value, _FRAMES.value, _SIZE.value, _CLASSES.value)
  print(format_table(rows, _FUSION.value, _FRAMES.value, _SIZE.value))


if __name__ == '__main__':
  app.run(main)
