"""Every config value checked once, before any work starts.

`check_config` names each bad key with its allowed values, all at once;
`check_devices` (after jax.distributed starts) checks what depends on the
device count. The modules that use the config then trust it.
"""

from etils import epath
import jax
import ml_collections

from pasnet_jax import parallel
from pasnet_jax.errors import ConfigError
from pasnet_jax.models import fusion as fusion_lib
from pasnet_jax.models import layers
from pasnet_jax.models import pose
from pasnet_jax.models import spatiotemporal
from pasnet_jax.models.pasnet import DTYPES, STRIDE

STRATEGIES = ('twice', 'conventional')
OPTIMIZERS = ('sgd', 'adam')
SCHEDULES = ('plateau', 'step')
# Evaluation crops per clip: the centre, or both ends and the centre.
EVAL_CROPS = (1, 3)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming every bad key and its allowed values."""
  problems = []

  def one_of(key: str, value, allowed) -> None:
    if value not in allowed:
      problems.append(f'{key}={value!r}; valid: '
                      + ', '.join(str(a) for a in allowed))

  def at_least(key: str, value, lowest: int) -> None:
    if value < lowest:
      problems.append(f'{key}={value} must be at least {lowest}')

  if config.model.fusion not in fusion_lib.STYLES:
    problems.append(f'model.fusion={config.model.fusion!r} is not a style; '
                    'valid: ' + ', '.join(fusion_lib.STYLES))
  if config.image_size <= 0 or config.image_size % STRIDE:
    problems.append(f'image_size={config.image_size} must be a positive '
                    f'multiple of {STRIDE} (e.g. 224)')
  if config.frames < 1:
    problems.append(f'frames={config.frames}: need at least one frame (K >= 1)')
  one_of('strategy', config.strategy, STRATEGIES)
  one_of('optimizer.name', config.optimizer.name, OPTIMIZERS)
  one_of('optimizer.schedule', config.optimizer.schedule, SCHEDULES)
  one_of('model.dtype', config.model.dtype, DTYPES)
  one_of('model.bn_policy', config.model.bn_policy, layers.BN_POLICIES)
  one_of('model.fusion_conv_init', config.model.fusion_conv_init,
         fusion_lib.CONV_INITS)
  one_of('model.eco_layout', config.model.eco_layout, spatiotemporal.LAYOUTS)
  one_of('model.pose_conv', config.model.pose_conv, pose.CONV_FORMS)
  one_of('distributed.initialize', config.distributed.initialize,
         parallel.DISTRIBUTED_MODES)
  one_of('eval_crops', config.eval_crops, EVAL_CROPS)
  if config.eval_short_side < config.image_size:
    problems.append(f'eval_short_side={config.eval_short_side} must be at '
                    f'least image_size={config.image_size}')
  if config.accumulation_steps < 1 or config.batch_size % config.accumulation_steps:
    problems.append(f'batch_size={config.batch_size} must be a multiple of '
                    f'accumulation_steps={config.accumulation_steps}')
  for key in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints',
              'batch_size', 'eval_batch_size', 'eval_clips',
              'optimizer.plateau_patience'):
    node, leaf = config, key
    if '.' in key:
      parent, leaf = key.split('.')
      node = config[parent]
    at_least(key, node[leaf], 1)
  # Each length is given in steps, or in epochs when its steps are 0.
  for steps, epochs in (('num_train_steps', 'num_epochs'),
                        ('eval_every_steps', 'eval_every_epochs'),
                        ('stage1.num_train_steps', 'stage1.num_epochs')):
    node = config.stage1 if steps.startswith('stage1.') else config
    given_steps = node[steps.split('.')[-1]]
    given_epochs = node[epochs.split('.')[-1]]
    if given_steps < 0 or given_epochs < 0 or not (given_steps or given_epochs):
      problems.append(f'{steps}={given_steps} and {epochs}={given_epochs}: set '
                      f'a positive {steps}, or {steps}=0 and a positive {epochs}')
  at_least('seed', config.seed, 0)
  at_least('data_workers', config.data_workers, -1)
  at_least('profile_steps', config.profile_steps, 0)
  # Checked here rather than where the weights are loaded, which comes
  # after the dataset's lookup or build (about 75 min for UCF-101).
  for key, what in (('eco', 'the directory python -m convert.eco wrote'),
                    ('openpose', 'the directory python -m convert.openpose '
                     'wrote'),
                    ('workdir', "a training run's --workdir")):
    path = config.init[key]
    if path and not epath.Path(path).exists():
      problems.append(f'init.{key}={path} does not exist; give {what}')
  if problems:
    raise ConfigError('Invalid config: ' + '; '.join(problems))


def check_devices(config: ml_collections.ConfigDict) -> None:
  """Batch sizes must split evenly over the devices; says what to set."""
  devices = jax.device_count()
  microbatch = config.batch_size // config.accumulation_steps
  if microbatch % devices:
    raise ConfigError(
        f'batch_size / accumulation_steps = {microbatch} clips per microbatch '
        f'does not divide over {devices} devices; set --config.batch_size to a '
        f'multiple of {devices * config.accumulation_steps} or change '
        '--config.accumulation_steps')
  check_eval_devices(config)


def check_eval_devices(config: ml_collections.ConfigDict) -> None:
  """The evaluation batch must split evenly over the devices."""
  devices = jax.device_count()
  if config.eval_batch_size % devices:
    raise ConfigError(f'eval_batch_size={config.eval_batch_size} does not divide '
                     f'over {devices} devices; set --config.eval_batch_size to '
                     f'a multiple of {devices}')
