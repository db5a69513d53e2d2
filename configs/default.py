"""Defaults shared by every dataset: the paper's and ECO-pytorch's recipe.

Dataset configs start from `get_config()` here and change what differs.
Every key that training reads is defined here, so that a misspelt override
(`--config.optimiser.lr`) is an error rather than a silent no-op, and
`MEANINGS` says what each one is: `python -m pasnet_jax.main --config=FILE
--print_config` prints it beside each resolved value.
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


# One line per key, for --print_config; the comments in get_config() say
# where a default comes from.
MEANINGS = {
    'dataset.name': 'TFDS dataset: ucf101_frames, hmdb51_frames or '
                    'synthetic_actions',
    'dataset.config': 'its TFDS config: split1, split2 or split3 (none for '
                      'synthetic_actions)',
    'dataset.data_dir': "where TFDS keeps built datasets; '' is TFDS's "
                        'default (~/tensorflow_datasets)',
    'dataset.manual_dir': 'folder holding the official archives (or their '
                          'extracted folders) to build from',
    'dataset.train_split': 'split trained on',
    'dataset.eval_split': 'split evaluated on, during training and for the '
                          'final results',
    'dataset.build': 'build the dataset when it is missing (the archives '
                     'must be in dataset.manual_dir)',
    'frames': 'segments per video, one frame each (K)',
    'image_size': 'side of the square crops the network sees, a multiple '
                  'of 32',
    'eval_short_side': 'evaluation resizes the short side to this, then '
                       'centre-crops image_size',
    'eval_clips': 'temporal clips averaged per video at evaluation',
    'eval_crops': 'spatial crops averaged per clip at evaluation: 1 (the '
                  'centre) or 3 (both ends and the centre)',
    'model.fusion': "fusion style by its Table II name: A (ECO), I, E*A, "
                    'A+E*A, conv(A,E*A), A+pool(I), conv(A,I), '
                    'A+pool(I)+pool(F), conv(A,I,F)',
    'model.dropout': 'dropout rate before the classifier',
    'model.dtype': 'float32 or bfloat16 computation; parameters, BatchNorm '
                   'statistics, loss and optimizer stay float32',
    'model.bn_policy': "ECO's BatchNorm, 2D and 3D: trainable, partial (all "
                       'but the first frozen) or frozen',
    'model.freeze_pose': 'no gradient flows into OpenPose and no backward '
                         'pass is computed for it',
    'model.remat': 'recompute each block in the backward pass, to save '
                   'memory',
    'model.fusion_conv_init': "how the conv(...) styles' 1 x 1 convolution "
                              'starts: identity (x_A passed through) or '
                              'random',
    'model.eco_layout': "ECO's 3D part for runs from random weights: official "
                        "(the authors') or early; weights bring their own",
    'model.pose_conv': "OpenPose's 7 x 7 and 3 x 3 convolutions: auto "
                       '(through the FFT and Winograd with kernel transforms '
                       'prepared once, where measured faster: float32 on a '
                       'CPU, frozen pose), direct or transform '
                       '(docs/transform_convolutions.md)',
    'model.lambdas.explicit': 'lambda1 in A + lambda1 E*A',
    'model.lambdas.implicit': 'lambda2 in A + lambda2 pool(I)',
    'model.lambdas.implicit_with_paf': 'lambda3 in A + lambda3 pool(I) + '
                                       'lambda4 pool(F)',
    'model.lambdas.paf': 'lambda4 in A + lambda3 pool(I) + lambda4 pool(F)',
    'init.eco': 'converted ECO weights to start from (python -m convert.eco)',
    'init.openpose': 'converted OpenPose weights for the pose branch (python '
                     '-m convert.openpose)',
    'init.workdir': 'workdir of an earlier run whose weights are loaded last, '
                    'over any other',
    'strategy': 'twice: stage 1 finetunes ECO (fusion A), stage 2 PAS-Net '
                'from it; conventional: stage 2 alone, from init.*',
    'stage1.num_epochs': "stage 1's length in epochs, when "
                         'stage1.num_train_steps is 0',
    'stage1.num_train_steps': "stage 1's length in steps (0: use "
                              'stage1.num_epochs)',
    'stage1.learning_rate': "stage 1's learning rate; optimizer.learning_rate "
                            "is stage 2's",
    'optimizer.name': "sgd (the paper's) or adam (for training from random "
                      'weights)',
    'optimizer.learning_rate': 'learning rate after warm-up, before any decay',
    'optimizer.momentum': 'SGD momentum',
    'optimizer.nesterov': 'SGD with Nesterov momentum',
    'optimizer.weight_decay': 'on convolution and classifier weights; biases '
                              'and BatchNorm get none',
    'optimizer.bias_lr_multiplier': "biases' learning rate as a multiple of "
                                    "the weights'",
    'optimizer.clip_norm': "the summed gradient's global norm is clipped to "
                           'this',
    'optimizer.schedule': 'plateau: decay when validation top-1 stops '
                          'improving; step: decay at fractions decay_at of '
                          'the steps',
    'optimizer.decay_factor': 'each decay multiplies the learning rate by this',
    'optimizer.plateau_patience': 'evaluations in a row without a better '
                                  "top-1 before a plateau decay (the authors' "
                                  'num_saturate)',
    'optimizer.decay_at': 'fractions of the training steps where the step '
                          'schedule decays',
    'optimizer.warmup_steps': 'steps of linear warm-up from 0 (0: none)',
    'batch_size': 'clips per optimizer step over all devices and hosts',
    'accumulation_steps': 'microbatches a step is computed in, their '
                          'gradients summed; divides batch_size',
    'eval_batch_size': 'clips per evaluation batch over all devices and hosts',
    'num_epochs': 'training length in epochs (an incomplete last batch '
                  'counts as none), when num_train_steps is 0',
    'num_train_steps': 'training length in steps (0: use num_epochs)',
    'eval_every_epochs': 'evaluation every so many epochs, when '
                         'eval_every_steps is 0',
    'eval_every_steps': 'evaluation every so many steps (0: use '
                        'eval_every_epochs)',
    'log_every_steps': 'steps between progress lines and TensorBoard scalars',
    'checkpoint_every_steps': 'steps between checkpoints (an evaluation also '
                              'saves one)',
    'keep_checkpoints': 'latest checkpoints kept; the best by top-1 is kept '
                        'too',
    'seed': 'seed of the initial weights, dropout and data order',
    'data_workers': 'processes reading and decoding clips on each host (-1: '
                    'one per core; 0: none, in the training process)',
    'profile_steps': 'steps traced with the profiler into WORKDIR/profile '
                     '(0: none)',
    'distributed.initialize': 'jax.distributed: auto (when the environment '
                              'names a cluster or coordinator_address is '
                              'set), always or never',
    'distributed.coordinator_address': "host:port of process 0, where the "
                                       'environment names no cluster',
    'distributed.num_processes': 'processes of the run, with '
                                 'coordinator_address',
    'distributed.process_id': "this process's index, with "
                              'coordinator_address',
    'distributed.timeout_seconds': 'seconds a process waits for the others '
                                   'before giving up with an error',
}


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'ucf101_frames'
  config.dataset.config = 'split1'
  config.dataset.data_dir = ''
  config.dataset.manual_dir = ''
  config.dataset.train_split = 'train'
  config.dataset.eval_split = 'test'
  config.dataset.build = True

  config.frames = 16
  config.image_size = 224
  config.eval_short_side = 256
  config.eval_clips = 1
  config.eval_crops = 1

  config.model = ml_collections.ConfigDict()
  config.model.fusion = 'A+pool(I)+pool(F)'
  config.model.dropout = 0.3
  config.model.dtype = 'float32'
  # The authors' UCF-101 finetune trains every BatchNorm (--no_partialbn);
  # 'partial' is ECO-pytorch's default.
  config.model.bn_policy = 'trainable'
  config.model.freeze_pose = True
  config.model.remat = False
  config.model.fusion_conv_init = 'identity'
  config.model.eco_layout = 'official'
  config.model.pose_conv = 'auto'
  config.model.lambdas = ml_collections.ConfigDict()
  config.model.lambdas.explicit = 1.5
  config.model.lambdas.implicit = 1.5
  config.model.lambdas.implicit_with_paf = 0.5
  config.model.lambdas.paf = 1.0

  config.init = ml_collections.ConfigDict()
  config.init.eco = ''
  config.init.openpose = ''
  config.init.workdir = ''

  config.strategy = 'twice'
  config.stage1 = ml_collections.ConfigDict()
  config.stage1.num_epochs = 40.0
  config.stage1.num_train_steps = 0
  config.stage1.learning_rate = 0.001

  # The ECO authors' UCF-101 finetune (docs/architecture.md, "The authors'
  # UCF-101 recipe"): SGD, lr 0.001, Nesterov momentum 0.9, weight decay
  # 5e-4 on weights only, biases at twice the rate, gradient norm clipped at
  # 50, the learning rate x0.1 after 5 evaluations without a better top-1.
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.001
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 5e-4
  config.optimizer.bias_lr_multiplier = 2.0
  config.optimizer.clip_norm = 50.0
  config.optimizer.schedule = 'plateau'
  config.optimizer.decay_factor = 0.1
  config.optimizer.plateau_patience = 5
  config.optimizer.decay_at = (0.5, 0.75)
  config.optimizer.warmup_steps = 0

  # 64 clips a step in 4 microbatches of 16: the authors' -b 16 -i 4.
  config.batch_size = 64
  config.accumulation_steps = 4
  config.eval_batch_size = 16

  # The authors' 40 epochs, evaluated after each.
  config.num_epochs = 40.0
  config.num_train_steps = 0
  config.eval_every_epochs = 1.0
  config.eval_every_steps = 0
  config.log_every_steps = 20
  config.checkpoint_every_steps = 250
  config.keep_checkpoints = 3

  config.seed = 0
  config.data_workers = -1
  config.profile_steps = 0

  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = 'auto'
  config.distributed.coordinator_address = ''
  config.distributed.num_processes = 0
  config.distributed.process_id = -1
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
