"""HMDB-51 (51 classes).

Variants: --config=configs/hmdb51.py:split=2,frames=16,fusion=A
"""

from configs import default


def get_config(arg: str = ''):
  options = default.parse_options(arg, {'split': '1', 'frames': '16',
                                        'fusion': 'A+pool(I)+pool(F)'})
  config = default.get_config()
  config.dataset.name = 'hmdb51_frames'
  config.dataset.config = f'split{options["split"]}'
  config.frames = int(options['frames'])
  config.model.fusion = options['fusion']
  # HMDB-51 has about a third of UCF-101's training clips.
  config.num_train_steps = 1500
  config.stage1.num_train_steps = 1000
  config.eval_every_steps = 250
  return config
