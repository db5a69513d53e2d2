"""TFDS builder `synthetic_actions`: a small generated action dataset.

Short videos of an articulated stick figure (the 18 OpenPose COCO keypoints)
doing one of ten actions over varied backgrounds, with moving distractors
and camera shake. Every action is defined by its motion: sit_down and
stand_up pass through the same poses in opposite order, squat through the
same poses back and forth, and walk, wave, kick and punch each use a random
side, so that a single frame is ambiguous and no action changes under a
horizontal flip (the training augmentation). Subjects differ in body
proportions, clothes, pace and style; the test subjects are not among the
training ones. Everything follows from the config's seed.
"""

import dataclasses
import io

import numpy as np
from PIL import Image
from PIL import ImageDraw
import tensorflow_datasets as tfds

from pasnet_jax.data import frames_builder

ACTIONS = ('wave', 'clap', 'jumping_jack', 'jump', 'squat', 'sit_down',
           'stand_up', 'walk', 'kick', 'punch')

# The OpenPose COCO body keypoints, in OpenPose's order. "Right" is the
# figure's right, on the image's left.
KEYPOINTS = ('nose', 'neck', 'right_shoulder', 'right_elbow', 'right_wrist',
             'left_shoulder', 'left_elbow', 'left_wrist', 'right_hip',
             'right_knee', 'right_ankle', 'left_hip', 'left_knee',
             'left_ankle', 'right_eye', 'left_eye', 'right_ear', 'left_ear')
_K = {name: i for i, name in enumerate(KEYPOINTS)}
_ARM_BONES = (('right_shoulder', 'right_elbow'), ('right_elbow', 'right_wrist'),
              ('left_shoulder', 'left_elbow'), ('left_elbow', 'left_wrist'),
              ('right_shoulder', 'left_shoulder'))
_LEG_BONES = (('right_hip', 'right_knee'), ('right_knee', 'right_ankle'),
              ('left_hip', 'left_knee'), ('left_knee', 'left_ankle'),
              ('right_hip', 'left_hip'))
_SUPERSAMPLE = 2  # drawn at twice the size and reduced, for smooth edges


@dataclasses.dataclass
class SyntheticActionsConfig(tfds.core.BuilderConfig):
  seed: int = 0
  image_size: int = 96
  train_subjects: int = 30
  test_subjects: int = 10
  min_frames: int = 24
  max_frames: int = 40
  fps: float = 12.0


@dataclasses.dataclass(frozen=True)
class Body:
  """One subject: sizes as fractions of the figure's height, and style."""
  height: float          # figure height as a fraction of the frame
  torso: float
  neck: float
  shoulder: float        # half the shoulder width
  hip: float             # half the hip width
  upper_arm: float
  forearm: float
  thigh: float
  shin: float
  limb_width: float
  shirt: tuple[int, int, int]
  trousers: tuple[int, int, int]
  skin: tuple[int, int, int]
  cycles: float          # motion cycles per clip: K frames see one or two
  amplitude: float       # how far the subject moves


def make_body(rng: np.random.Generator) -> Body:
  def colour():
    return tuple(int(c) for c in rng.integers(0, 256, 3))
  return Body(
      height=rng.uniform(0.68, 0.85), torso=rng.uniform(0.27, 0.33),
      neck=rng.uniform(0.08, 0.11), shoulder=rng.uniform(0.08, 0.12),
      hip=rng.uniform(0.05, 0.07), upper_arm=rng.uniform(0.14, 0.17),
      forearm=rng.uniform(0.13, 0.16), thigh=rng.uniform(0.21, 0.25),
      shin=rng.uniform(0.21, 0.25), limb_width=rng.uniform(0.06, 0.08),
      shirt=colour(), trousers=colour(),
      skin=tuple(int(c) for c in rng.uniform(0.3, 1.0) * np.array([255, 205, 170])),
      cycles=rng.uniform(0.8, 1.4), amplitude=rng.uniform(0.9, 1.15))


def _smoothstep(x):
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3 - 2 * x)


def _joint_angles(action: str, t: np.ndarray, body: Body,
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Per-frame angles (radians) and pelvis offsets for an action.

  Limb angles are measured from straight down, positive away from the body's
  midline; the elbow and knee angles add to the upper bone's. `t` is time in
  seconds. `depth` is how far the pelvis sinks with the feet planted (0..1).
  """
  n = len(t)
  a = body.amplitude
  duration = t[-1] if t[-1] > 0 else 1.0
  cycles = body.cycles * rng.uniform(0.85, 1.15)
  phase = 2 * np.pi * cycles * t / duration + rng.uniform(0, 2 * np.pi)
  side = rng.choice([-1, 1])     # which arm or leg leads, for flip symmetry
  zero = np.zeros(n)
  pose = {
      'arm_r': np.full(n, 0.15), 'arm_l': np.full(n, 0.15),
      'elbow_r': np.full(n, 0.1), 'elbow_l': np.full(n, 0.1),
      'leg_r': np.full(n, 0.06), 'leg_l': np.full(n, 0.06),
      'knee_r': zero.copy(), 'knee_l': zero.copy(),
      'dx': zero.copy(), 'dy': zero.copy(), 'lean': zero.copy(),
      'depth': zero.copy(),
  }
  lead, other = ('r', 'l') if side < 0 else ('l', 'r')
  if action == 'wave':
    pose[f'arm_{lead}'] = 2.5 + 0.1 * np.sin(phase / 2)
    pose[f'elbow_{lead}'] = 0.2 + 0.65 * a * np.sin(2 * phase)
  elif action == 'clap':
    closed = 0.5 + 0.5 * np.sin(2 * phase)
    for s in 'rl':
      pose[f'arm_{s}'] = 0.75 + 0.2 * closed
      pose[f'elbow_{s}'] = -0.3 - 1.5 * a * closed
  elif action == 'jumping_jack':
    spread = 0.5 - 0.5 * np.cos(phase)
    for s in 'rl':
      pose[f'arm_{s}'] = 0.2 + 2.55 * a * spread
      pose[f'leg_{s}'] = 0.05 + 0.33 * a * spread
    pose['dy'] = -0.05 * np.abs(np.sin(phase))
  elif action == 'jump':
    air = np.abs(np.sin(phase))
    crouch = (1 - air) ** 3     # knees bend on landing and take-off
    pose['dy'] = -0.2 * a * air + 0.1 * crouch
    for s in 'rl':
      pose[f'arm_{s}'] = 0.3 + 1.6 * air
      pose[f'leg_{s}'] = 0.1 + 0.35 * crouch
      pose[f'knee_{s}'] = -0.8 * crouch
  elif action in ('squat', 'sit_down', 'stand_up'):
    if action == 'squat':
      depth = 0.5 - 0.5 * np.cos(phase)
    else:
      start, end = rng.uniform(0.0, 0.3), rng.uniform(0.65, 1.0)
      depth = _smoothstep((t / duration - start) / (end - start))
      if action == 'stand_up':
        depth = 1 - depth
    pose['depth'] = 0.9 * a * depth
    for s in 'rl':
      pose[f'arm_{s}'] = 0.2 + 1.1 * depth
  elif action == 'walk':
    swing = 0.4 * a * np.sin(phase)
    # Seen from the side the legs scissor: both feet move the same way
    # across the image as the angles (measured outward per side) differ.
    pose['leg_r'], pose['leg_l'] = -swing, swing
    pose['knee_r'] = -0.5 * np.clip(np.sin(phase + 1), 0, None)
    pose['knee_l'] = -0.5 * np.clip(-np.sin(phase + 1), 0, None)
    pose['arm_r'], pose['arm_l'] = 0.1 + 0.5 * swing, 0.1 - 0.5 * swing
    pose['dx'] = side * rng.uniform(0.25, 0.4) * t / max(t[-1], 1e-6)
    pose['dy'] = -0.025 * np.abs(np.cos(phase))
  elif action == 'kick':
    kick = np.clip(np.sin(phase), 0, None) ** 2
    pose[f'leg_{lead}'] = 0.06 + 1.35 * a * kick
    pose[f'knee_{lead}'] = -0.9 * np.sin(np.pi * kick)
    for s in 'rl':
      pose[f'arm_{s}'] = np.full(n, 0.7)
    pose['lean'] = -side * 0.15 * kick
  elif action == 'punch':
    for s, sign in (('r', 1), ('l', -1)):
      reach = np.clip(sign * np.sin(phase), 0, None) * a
      pose[f'arm_{s}'] = 0.4 + 1.15 * reach
      pose[f'elbow_{s}'] = -2.4 * (1 - reach)
  else:
    raise ValueError(f'unknown action {action!r}')
  # Every subject fidgets a little, so no pose is exactly repeated.
  for key in ('arm_r', 'arm_l', 'elbow_r', 'elbow_l', 'leg_r', 'leg_l', 'lean'):
    wobble = rng.uniform(0.02, 0.07) * np.sin(
        2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi))
    pose[key] = pose[key] + wobble
  return pose


def _direction(angle, side):
  """Unit vectors for angles from straight down, positive away from the
  midline on `side` (-1: the figure's right, drawn on the image's left)."""
  return np.stack([side * np.sin(angle), np.cos(angle)], axis=-1)


def _leg_with_planted_foot(hip, ankle, thigh, shin, side):
  """Knee of a two-bone leg from hip to ankle, bent outward (squatting)."""
  span = ankle - hip
  distance = np.linalg.norm(span, axis=-1, keepdims=True)
  distance = np.clip(distance, 1e-6, thigh + shin - 1e-6)
  along = (thigh ** 2 - shin ** 2 + distance ** 2) / (2 * distance)
  across = np.sqrt(np.clip(thigh ** 2 - along ** 2, 0, None))
  unit = span / distance
  outward = np.stack([-unit[:, 1], unit[:, 0]], axis=-1)
  outward *= np.where(outward[:, :1] * side >= 0, 1, -1)
  return hip + unit * along + outward * across


def keypoints_for(pose: dict[str, np.ndarray], body: Body) -> np.ndarray:
  """(T, 18, 2) keypoints in units of the figure's height, pelvis at origin
  when standing, y downward."""
  n = len(pose['dx'])
  points = np.zeros((n, len(KEYPOINTS), 2))
  standing_leg = body.thigh + body.shin
  pelvis = np.stack([pose['dx'], pose['dy'] + pose['depth'] * 0.45 *
                     standing_leg], axis=-1)
  up = np.stack([np.sin(pose['lean']), -np.cos(pose['lean'])], axis=-1)
  across = np.stack([np.cos(pose['lean']), np.sin(pose['lean'])], axis=-1)
  neck = pelvis + up * body.torso
  nose = neck + up * body.neck
  points[:, _K['neck']] = neck
  points[:, _K['nose']] = nose
  for side, s in ((-1, 'right'), (1, 'left')):
    short = s[0]
    shoulder = neck + across * side * body.shoulder
    elbow = shoulder + _direction(pose[f'arm_{short}'], side) * body.upper_arm
    wrist = elbow + _direction(pose[f'arm_{short}'] + pose[f'elbow_{short}'],
                               side) * body.forearm
    hip = pelvis + np.array([side * body.hip, 0.0])
    if pose['depth'].any():
      # Feet stay where they stood; the knees bend outward.
      foot = np.stack([pose['dx'] + side * (body.hip + 0.03),
                       np.full(n, standing_leg)], axis=-1)
      bent = _leg_with_planted_foot(hip, foot, body.thigh, body.shin, side)
      free = hip + _direction(pose[f'leg_{short}'], side) * body.thigh
      weight = (pose['depth'] > 0)[:, None]
      knee = np.where(weight, bent, free)
      ankle = np.where(weight, foot, free + _direction(
          pose[f'leg_{short}'] + pose[f'knee_{short}'], side) * body.shin)
    else:
      knee = hip + _direction(pose[f'leg_{short}'], side) * body.thigh
      ankle = knee + _direction(pose[f'leg_{short}'] + pose[f'knee_{short}'],
                                side) * body.shin
    for name, point in (('shoulder', shoulder), ('elbow', elbow),
                        ('wrist', wrist), ('hip', hip), ('knee', knee),
                        ('ankle', ankle)):
      points[:, _K[f'{s}_{name}']] = point
    points[:, _K[f'{s}_eye']] = nose + up * 0.03 + across * side * 0.025
    points[:, _K[f'{s}_ear']] = nose + up * 0.01 + across * side * 0.055
  return points


def _muted(colours):
  """Colours moved most of the way to one middle grey, keeping some hue."""
  return 0.3 * colours + 0.7 * 128


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """float32 (size, size, 3): a gradient, blobs, stripes or wall and floor,
  with fine texture; muted, so that the figure stands out."""
  colours = _muted(rng.uniform(0, 255, (2, 3)))
  y, x = np.mgrid[0:size, 0:size] / size
  kind = rng.integers(4)
  if kind == 0:
    angle = rng.uniform(0, 2 * np.pi)
    mix = (np.cos(angle) * x + np.sin(angle) * y)
    mix = (mix - mix.min()) / max(np.ptp(mix), 1e-6)
  elif kind == 1:
    grid = _muted(rng.uniform(0, 255, (rng.integers(3, 8), rng.integers(3, 8), 3)))
    image = Image.fromarray(grid.astype(np.uint8)).resize(
        (size, size), Image.BICUBIC)
    return np.asarray(image, np.float32) + rng.normal(0, 6, (size, size, 3))
  elif kind == 2:
    angle, frequency = rng.uniform(0, np.pi), rng.uniform(3, 12)
    mix = 0.5 + 0.5 * np.sin(2 * np.pi * frequency *
                             (np.cos(angle) * x + np.sin(angle) * y))
  else:
    mix = (y > rng.uniform(0.55, 0.9)).astype(np.float64)
  background = colours[0] + mix[..., None] * (colours[1] - colours[0])
  return (background + rng.normal(0, 6, (size, size, 3))).astype(np.float32)


def _contrasting_colour(colour, background_mean, rng):
  """`colour`, or a random one, at least 80 grey levels from the background."""
  colour = np.array(colour, np.float64)
  grey = np.array([0.299, 0.587, 0.114])
  for _ in range(50):
    if abs((colour - background_mean) @ grey) > 80:
      break
    colour = rng.uniform(0, 255, 3)
  return tuple(int(c) for c in colour)


def _distractors(rng: np.random.Generator, count: int, size: int, n: int):
  """Moving shapes: (kind, colour, per-frame positions, extent, angles)."""
  shapes = []
  for _ in range(count):
    start = rng.uniform(0, size, 2)
    velocity = rng.uniform(-0.7, 0.7, 2)
    path = start + velocity * np.arange(n)[:, None]
    path = size - np.abs(size - np.mod(path, 2 * size))   # bounce off edges
    shapes.append((rng.choice(['disc', 'box', 'stick']),
                   tuple(int(c) for c in rng.integers(0, 256, 3)), path,
                   rng.uniform(0.04, 0.08) * size,
                   rng.uniform(0, np.pi) + rng.uniform(-0.2, 0.2) * np.arange(n)))
  return shapes


def _draw_shape(draw, shape, frame: int, scale: float):
  kind, colour, path, extent, angles = shape
  x, y = path[frame] * scale
  r = extent * scale / 2
  if kind == 'disc':
    draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
  elif kind == 'box':
    draw.rectangle([x - r, y - r * 0.7, x + r, y + r * 0.7], fill=colour)
  else:
    dx, dy = np.cos(angles[frame]) * r * 1.5, np.sin(angles[frame]) * r * 1.5
    draw.line([x - dx, y - dy, x + dx, y + dy], fill=colour,
              width=max(1, int(r / 2.5)))


def _draw_figure(draw, points, body: Body, colours, scale_px: float):
  def xy(name):
    return tuple(points[_K[name]])
  width = max(2, int(body.limb_width * scale_px))
  shirt, trousers, skin = colours
  def bone(a, b, colour, w=width):
    draw.line([xy(a), xy(b)], fill=colour, width=w)
    for name in (a, b):
      x, y = xy(name)
      draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=colour)
  mid_hip = tuple((points[_K['right_hip']] + points[_K['left_hip']]) / 2)
  for a, b in _LEG_BONES:
    bone(a, b, trousers)
  draw.line([xy('neck'), mid_hip], fill=shirt, width=int(width * 1.8))
  for a, b in _ARM_BONES:
    bone(a, b, shirt)
  x, y = points[_K['nose']]
  r = 0.065 * scale_px
  draw.ellipse([x - r, y - r * 1.2, x + r, y + r * 0.8], fill=skin)


def render_video(config: SyntheticActionsConfig, subject: int, action: int
                 ) -> dict:
  """One example: frames (JPEG), keypoints, label, name, num_frames, fps."""
  body = make_body(np.random.default_rng([config.seed, subject]))
  rng = np.random.default_rng([config.seed, subject, action, 1])
  size = config.image_size
  n = int(rng.integers(config.min_frames, config.max_frames + 1))
  t = np.arange(n) / config.fps
  pose = _joint_angles(ACTIONS[action], t, body, rng)
  figure_px = body.height * size
  # Camera shake around a slow drift, and where the figure stands.
  drift = np.cumsum(rng.normal(0, 0.25, (n, 2)), axis=0)
  shake = drift - drift.mean(axis=0) + rng.normal(0, 0.4, (n, 2))
  origin = np.array([rng.uniform(0.4, 0.6) * size,
                     size * rng.uniform(0.86, 0.95) -
                     (body.thigh + body.shin) * figure_px])
  if ACTIONS[action] == 'walk':
    origin[0] = size / 2 - pose['dx'][-1] * figure_px / 2
  keypoints = (keypoints_for(pose, body) * figure_px + origin + shake[:, None]
               ).astype(np.float32)

  background = _background(rng, size)
  mean = background.reshape(-1, 3).mean(axis=0)
  colours = tuple(_contrasting_colour(c, mean, rng)
                  for c in (body.shirt, body.trousers, body.skin))
  shapes = _distractors(rng, int(rng.integers(1, 3)), size, n)
  in_front = rng.random(len(shapes)) < 0.15
  big = size * _SUPERSAMPLE
  jpegs = []
  for i in range(n):
    # The background moves with the camera as the figure does.
    offset = np.round(shake[i]).astype(int)
    frame = np.roll(background, shift=(offset[1], offset[0]), axis=(0, 1))
    image = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).resize(
        (big, big), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    for shape, front in zip(shapes, in_front):
      if not front:
        _draw_shape(draw, shape, i, _SUPERSAMPLE)
    _draw_figure(draw, keypoints[i] * _SUPERSAMPLE, body, colours,
                 figure_px * _SUPERSAMPLE)
    for shape, front in zip(shapes, in_front):
      if front:
        _draw_shape(draw, shape, i, _SUPERSAMPLE)
    image = image.resize((size, size), Image.BOX)
    noisy = np.asarray(image, np.float32) + rng.normal(0, 3, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
        buffer, format='JPEG', quality=90)
    jpegs.append(buffer.getvalue())
  return {
      'video': jpegs, 'keypoints': keypoints, 'label': action,
      'name': f'{ACTIONS[action]}/subject{subject:03d}',
      'num_frames': n, 'fps': config.fps,
  }


def _render_task(task):
  """(position, video example) of a (position, config, subject, action)."""
  position, config, subject, action = task
  return position, render_video(config, subject, action)


class SyntheticActions(tfds.core.GeneratorBasedBuilder):
  """Generated stick-figure actions: 10 classes, 96 x 96, 24 to 40 frames.

  300 training videos of 30 subjects and 100 test videos of 10 others, each
  subject doing each action once. The `keypoints` of a frame are its 18
  OpenPose COCO joints (x, y) in pixels.
  """
  name = 'synthetic_actions'
  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Ten actions of a stick figure, 96 x 96, a record per video.',
      '2.0.0': 'A record per frame, in order; the videos in metadata.json.',
  }
  BUILDER_CONFIGS = [SyntheticActionsConfig(
      name='default', description='Seed 0, 96 x 96, 30 + 10 subjects.')]

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    frames_builder.use_array_record_unless_told(self, file_format)

  def _info(self) -> tfds.core.DatasetInfo:
    return frames_builder.frames_info(
        self, ACTIONS, {'keypoints': tfds.features.Tensor(
            shape=(len(KEYPOINTS), 2), dtype=np.float32)},
        description=self.__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated.
    config = self.builder_config
    train = range(config.train_subjects)
    test = range(config.train_subjects,
                 config.train_subjects + config.test_subjects)
    return {'train': self._generate_examples(train, 'train'),
            'test': self._generate_examples(test, 'test')}

  def _generate_examples(self, subjects, split):
    tasks = [(position, self.builder_config, subject, action)
             for position, (subject, action) in enumerate(
                 (s, a) for s in subjects for a in range(len(ACTIONS)))]
    yield from frames_builder.frame_examples(
        frames_builder.map_in_workers(
            _render_task, tasks, f'{self.name} {split}: drawing videos'),
        len(tasks), self.info, split)
