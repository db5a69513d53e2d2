"""UCF-101 (101 classes), the paper's main benchmark.

Variants: --config=configs/ucf101.py:split=2,frames=32,fusion=A
"""

from configs import default


def get_config(arg: str = ''):
  options = default.parse_options(arg, {'split': '1', 'frames': '16',
                                        'fusion': 'A+pool(I)+pool(F)'})
  config = default.get_config()
  config.dataset.name = 'ucf101_frames'
  config.dataset.config = f'split{options["split"]}'
  config.frames = int(options['frames'])
  config.model.fusion = options['fusion']
  return config
