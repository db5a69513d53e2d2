"""Every config value checked once, before any work starts.

`check_config` names each bad key with its allowed values, all at once;
`check_devices` (after jax.distributed starts) checks what depends on the
device count. The modules that use the config then trust it.
"""

import jax
import ml_collections

from pasnet_jax.errors import ConfigError
from pasnet_jax.models import fusion as fusion_lib
from pasnet_jax.models.pasnet import DTYPES, STRIDE

STRATEGIES = ('twice', 'conventional')
OPTIMIZERS = ('sgd', 'adam')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the key and a fix, before any work starts."""
  problems = []
  if config.model.fusion not in fusion_lib.STYLES:
    problems.append(f'model.fusion={config.model.fusion!r} is not a style; '
                    'valid: ' + ', '.join(fusion_lib.STYLES))
  if config.image_size <= 0 or config.image_size % STRIDE:
    problems.append(f'image_size={config.image_size} must be a positive '
                    f'multiple of {STRIDE} (e.g. 224)')
  if config.frames < 1:
    problems.append(f'frames={config.frames}: need at least one frame (K >= 1)')
  if config.strategy not in STRATEGIES:
    problems.append(f'strategy={config.strategy!r}; valid: {", ".join(STRATEGIES)}')
  if config.optimizer.name not in OPTIMIZERS:
    problems.append(f'optimizer.name={config.optimizer.name!r}; valid: '
                    + ', '.join(OPTIMIZERS))
  if config.model.dtype not in DTYPES:
    problems.append(f'model.dtype={config.model.dtype!r}; valid: '
                    + ', '.join(DTYPES))
  if config.accumulation_steps < 1 or config.batch_size % config.accumulation_steps:
    problems.append(f'batch_size={config.batch_size} must be a multiple of '
                    f'accumulation_steps={config.accumulation_steps}')
  for key in ('num_train_steps', 'log_every_steps', 'eval_every_steps',
              'checkpoint_every_steps', 'keep_checkpoints', 'batch_size',
              'eval_batch_size'):
    if config[key] < 1:
      problems.append(f'{key}={config[key]} must be at least 1')
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
  if config.eval_batch_size % devices:
    raise ConfigError(f'eval_batch_size={config.eval_batch_size} does not divide '
                     f'over {devices} devices; set --config.eval_batch_size to '
                     f'a multiple of {devices}')
