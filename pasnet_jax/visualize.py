"""The paper's Fig. 3 for one video: what each branch sees.

  python -m pasnet_jax.visualize --workdir=DIR video.mp4 --out=fig.png

Rows: the K sampled frames; the explicit pose map x_E over each frame; the
part-affinity-field magnitude; the implicit pose features x_I (channel
mean); the fused map that enters the 3D network (channel mean).
"""

import functools
import os
import sys

from absl import app
from absl import flags
import jax
import numpy as np

from pasnet_jax import cli
from pasnet_jax import errors
from pasnet_jax import inference
from pasnet_jax.models.pasnet import PASNet


def feature_rows(features: dict) -> list[tuple[str, np.ndarray]]:
  """(title, (K, h, w) map) for each row of the figure after the frames."""
  paf = features['paf']
  # The 38 PAF channels are 19 limbs' (x, y) vectors: show each pixel's
  # strongest limb vector.
  limbs = paf.reshape(*paf.shape[:-1], paf.shape[-1] // 2, 2)
  rows = [('explicit pose x_E', features['explicit'][..., 0]),
          ('PAF magnitude', np.max(np.linalg.norm(limbs, axis=-1), axis=-1)),
          ('implicit x_I (mean)', features['implicit'].mean(axis=-1)),
          ('fused (mean)', features['fused'].mean(axis=-1))]
  return rows


def pose_note(config) -> str | None:
  """What the figure's pose rows can show, when the run had no OpenPose
  weights: random pose features look like structure and mean nothing."""
  if config.init.openpose or config.init.workdir:
    return None
  if config.model.freeze_pose:
    return ('pose branch untrained: random, frozen weights (no OpenPose '
            'checkpoint was given)')
  return ('pose branch trained from random weights (no OpenPose checkpoint '
          'was given)')


def draw(frames: np.ndarray, rows, title: str, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  count = frames.shape[0]
  figure, axes = plt.subplots(len(rows) + 1, count,
                              figsize=(1.9 * count + 1, 1.9 * (len(rows) + 1)),
                              squeeze=False)
  height, width = frames.shape[1:3]
  for k in range(count):
    axes[0, k].imshow(frames[k])
    axes[0, k].set_title(f'frame {k + 1}', fontsize=8)
    for r, (name, maps) in enumerate(rows, start=1):
      if r == 1:
        axes[r, k].imshow(frames[k])
        axes[r, k].imshow(maps[k], cmap='jet', alpha=0.55,
                          extent=(0, width, height, 0), interpolation='bilinear')
      else:
        axes[r, k].imshow(maps[k], cmap='viridis', interpolation='nearest')
      if k == 0:
        axes[r, k].set_ylabel(name, fontsize=8)
  for axis in axes.flat:
    axis.set_xticks([])
    axis.set_yticks([])
  axes[0, 0].set_ylabel('sampled frames', fontsize=8)
  figure.suptitle(title, fontsize=10)
  figure.tight_layout()
  temporary = path + '.tmp.png'
  figure.savefig(temporary, dpi=110)
  plt.close(figure)
  os.replace(temporary, path)


def define_flags():
  """Flags of this program, defined only when it runs as one."""
  flags.DEFINE_string('workdir', None, 'Training run.', required=True)
  flags.DEFINE_string('out', 'pasnet_maps.png', 'Output PNG.')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('Give exactly one video file.')
  cli.quiet_libraries()
  with cli.clean_errors():
    trained = inference.load_trained(flags.FLAGS.workdir)
    config = trained.config
    clip = inference.clip_from_file(argv[1], num_frames=config.frames,
                                   image_size=config.image_size,
                                   short_side=config.eval_short_side)
    if trained.model.fusion == 'A':
      raise errors.UsageProblem(f'{flags.FLAGS.workdir} has no pose branch (fusion '
                             '"A"): nothing to draw but the frames.')
    features_of = jax.jit(functools.partial(
        trained.model.apply, train=False, method=PASNet.features))
    device = jax.devices()[0]
    features = jax.device_get(features_of(
        trained.on_devices(device), jax.device_put(clip[None], device)))
    probabilities = np.exp(features['logits'][0] - features['logits'][0].max())
    best = int(np.argmax(probabilities))
    title = (f'{os.path.basename(argv[1])}: {trained.class_names[best]} '
             f'({probabilities[best] / probabilities.sum():.2f}), fusion '
             f'{trained.model.fusion}')
    note = pose_note(config)
    if note:
      title += f'\n{note}'
    draw(np.asarray(clip, np.uint8), feature_rows(features), title, flags.FLAGS.out)
    print(f'wrote {flags.FLAGS.out}' + (f' ({note})' if note else ''))


if __name__ == '__main__':
  define_flags()
  sys.exit(app.run(main))
