"""The embedded demo: the generated `synthetic_actions` set, end to end.

  python -m pasnet_jax.main --config=configs/synthetic.py --workdir=runs/demo

Ten actions of a stick figure at 96 x 96, trained at 64 x 64 from random
weights (no ECO or OpenPose checkpoint is needed), with the twice-finetune
method: stage 1 trains ECO (fusion A), stage 2 PAS-Net. Sized to finish in
about ten minutes on two CPU cores.

Stage 2 fuses with conv(A,I,F), not the paper's best A+pool(I)+pool(F):
without OpenPose weights the pose branch is random and frozen, and adding
its features to x_A moves stage 1's network off what it learnt (the demo's
PAS-Net then scored below its own stage 1). conv(A,I,F)'s 1 x 1 convolution
starts as the identity on x_A, so stage 2 begins where stage 1 ended and
takes from the pose features only what helps.
"""

from pasnet_jax import config_files

default = config_files.load_beside(__file__, 'default')


def get_config(arg: str = ''):
  options = default.parse_options(arg, {'frames': 4, 'fusion': 'conv(A,I,F)'})
  config = default.get_config()
  config.dataset.name = 'synthetic_actions'
  config.dataset.config = ''
  config.frames = options['frames']
  config.image_size = 64
  config.eval_short_side = 72
  config.model.fusion = options['fusion']

  config.batch_size = 8
  config.accumulation_steps = 1
  config.eval_batch_size = 20
  # From random weights Adam gets somewhere in minutes; the paper's SGD
  # recipe is for finetuning pretrained weights.
  config.optimizer.name = 'adam'
  # Stage 2's: Adam's first updates move every weight by about the
  # learning rate whatever its gradient, and at 3e-4 they undid part of
  # stage 1 (top-1 0.72 -> 0.65); finetuning wants small steps.
  config.optimizer.learning_rate = 3e-5
  config.optimizer.weight_decay = 1e-5
  config.optimizer.nesterov = False
  config.optimizer.bias_lr_multiplier = 1.0
  config.optimizer.schedule = 'step'
  config.optimizer.warmup_steps = 10
  config.optimizer.decay_at = (0.7,)
  config.stage1.num_train_steps = 220
  config.stage1.learning_rate = 1e-3
  config.num_train_steps = 20
  config.log_every_steps = 10
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 50
  return config
