"""Defaults shared by every dataset: the paper's and ECO-pytorch's recipe.

Dataset configs start from `get_config()` here and change what differs.
Every key that training reads is defined here, so that a misspelt override
(`--config.optimiser.lr`) is an error rather than a silent no-op.
"""

import ml_collections

from pasnet_jax import errors


def parse_options(arg: str, defaults: dict) -> dict:
  """Parses a config argument 'key=value,key=value' over `defaults`.

  Each value takes the type of its default. Commas inside parentheses belong
  to the value, so fusion=conv(A,I,F) works; an unknown key or a value of
  the wrong type is an error naming the key and the valid ones.
  """
  items, depth, current = [], 0, ''
  for char in arg:
    depth += {'(': 1, ')': -1}.get(char, 0)
    if char == ',' and depth == 0:
      items.append(current)
      current = ''
    else:
      current += char
  items.append(current)
  options = dict(defaults)
  valid = ', '.join(sorted(defaults))
  for item in filter(None, items):
    key, _, value = item.partition('=')
    if key not in defaults:
      raise errors.ConfigArgumentError(
          f'unknown config argument {key!r} (--config=FILE:key=value,...); '
          f'valid: {valid}')
    kind = type(defaults[key])
    try:
      options[key] = kind(value)
    except ValueError:
      raise errors.ConfigArgumentError(
          f'config argument {key}={value!r} is not of type {kind.__name__} '
          f'(e.g. {key}={defaults[key]})') from None
  return options


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'ucf101_frames'
  config.dataset.config = 'split1'
  # Where TFDS keeps built datasets; '' means TFDS's default (~/tensorflow_datasets).
  config.dataset.data_dir = ''
  # Where the official archives (or their extracted folders) are placed.
  config.dataset.manual_dir = ''
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'test'
  # Build the dataset when it is missing (the archives must be in manual_dir).
  config.dataset.build = True

  # Segments per video, one frame each (K).
  config.frames = 16
  config.image_size = 224
  # Evaluation resizes the short side to this, then centre-crops image_size.
  config.eval_short_side = 256
  # Temporal clips x spatial crops averaged at evaluation (1 = single view).
  config.eval_clips = 1
  config.eval_crops = 1

  config.model = ml_collections.ConfigDict()
  config.model.fusion = 'A+pool(I)+pool(F)'
  config.model.dropout = 0.3
  config.model.dtype = 'float32'
  # The authors' UCF-101 finetune trains every BatchNorm (--no_partialbn);
  # 'partial' is ECO-pytorch's default, which freezes all but the first.
  config.model.bn_policy = 'trainable'
  config.model.freeze_pose = True
  config.model.remat = False
  config.model.fusion_conv_init = 'identity'
  # ECO's 3D part for runs from random weights: 'official' (the authors')
  # or 'early'. Converted or trained weights bring their own layout.
  config.model.eco_layout = 'official'
  config.model.lambdas = ml_collections.ConfigDict()
  config.model.lambdas.explicit = 1.5
  config.model.lambdas.implicit = 1.5
  config.model.lambdas.implicit_with_paf = 0.5
  config.model.lambdas.paf = 1.0

  # Initialisation: converted checkpoints (python -m convert.eco / openpose)
  # or the workdir of an earlier run.
  config.init = ml_collections.ConfigDict()
  config.init.eco = ''
  config.init.openpose = ''
  config.init.workdir = ''

  # "twice": stage 1 finetunes ECO (fusion A), stage 2 PAS-Net from it.
  # "conventional": stage 2 alone, from the ECO and OpenPose weights.
  config.strategy = 'twice'
  # What stage 1 changes relative to the rest of the config.
  config.stage1 = ml_collections.ConfigDict()
  config.stage1.num_epochs = 40.0
  config.stage1.num_train_steps = 0
  config.stage1.learning_rate = 0.001

  # The ECO authors' UCF-101 finetune (docs/architecture.md, "The authors'
  # UCF-101 recipe"): SGD, lr 0.001, Nesterov momentum 0.9, weight decay
  # 5e-4 on weights only, biases at twice the rate, gradient norm clipped at 50.
  config.optimizer = ml_collections.ConfigDict()
  # "sgd" (the paper's) or "adam" (for training from random weights).
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.001
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  # On convolution and classifier weights; biases and BatchNorm get none.
  config.optimizer.weight_decay = 5e-4
  config.optimizer.bias_lr_multiplier = 2.0
  config.optimizer.clip_norm = 50.0
  # "plateau" (the authors'): the learning rate is multiplied by decay_factor
  # each time validation top-1 has not improved for plateau_patience
  # evaluations in a row (their num_saturate). "step": multiplied by
  # decay_factor at each fraction of the training steps in decay_at.
  config.optimizer.schedule = 'plateau'
  config.optimizer.decay_factor = 0.1
  config.optimizer.plateau_patience = 5
  config.optimizer.decay_at = (0.5, 0.75)
  # Linear warm-up from 0 over these steps (0 = none).
  config.optimizer.warmup_steps = 0

  # Clips per optimizer step over all devices and hosts, in
  # accumulation_steps microbatches: 64 in 4 of 16 is the authors' -b 16 -i 4.
  config.batch_size = 64
  config.accumulation_steps = 4
  config.eval_batch_size = 16

  # Training length in epochs of the training split (the last incomplete
  # batch of an epoch counts as none), or in steps when num_train_steps > 0.
  config.num_epochs = 40.0
  config.num_train_steps = 0
  # Evaluation every so many epochs, or steps when eval_every_steps > 0.
  config.eval_every_epochs = 1.0
  config.eval_every_steps = 0
  config.log_every_steps = 20
  config.checkpoint_every_steps = 250
  config.keep_checkpoints = 3

  config.seed = 0
  # Steps to trace with the profiler (0 = none); the trace goes to workdir/profile.
  config.profile_steps = 0

  config.distributed = ml_collections.ConfigDict()
  # "auto": jax.distributed.initialize() when the environment names a
  # cluster (Cloud TPU pod, SLURM, or the coordinator settings below);
  # "always" / "never" force it.
  config.distributed.initialize = 'auto'
  config.distributed.coordinator_address = ''
  config.distributed.num_processes = 0
  config.distributed.process_id = -1
  # Seconds a process waits for the others before giving up with an error.
  config.distributed.timeout_seconds = 300

  return config


def video_dataset_config(dataset_name: str, arg: str) -> ml_collections.ConfigDict:
  """Defaults for an official video dataset, with 'split=,frames=,fusion=' args."""
  options = parse_options(arg, {'split': 1, 'frames': 16,
                                'fusion': 'A+pool(I)+pool(F)'})
  config = get_config()
  config.dataset.name = dataset_name
  config.dataset.config = f'split{options["split"]}'
  config.frames = options['frames']
  config.model.fusion = options['fusion']
  return config
