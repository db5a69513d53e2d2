"""Config files that share code, loadable from any path and working directory.

ml_collections loads `--config=PATH` as a module of no package, so a config
that imported `configs.default` would find it only when run from the
checkout. `load_beside` loads a neighbour file by its path instead.
"""

import importlib.util
import os
import sys
import types
from typing import Any, Iterator

import ml_collections


def load_beside(config_file: str, name: str) -> types.ModuleType:
  """Module `name`.py of the folder holding `config_file` (a `__file__`)."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py')
  # One module per file, however many configs load it.
  module_name = f'_pasnet_jax_config_{name}_{abs(hash(path)):x}'
  if module_name not in sys.modules:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
  return sys.modules[module_name]


def flat_items(config: ml_collections.ConfigDict,
               prefix: str = '') -> Iterator[tuple[str, Any]]:
  """(dotted key, value) of every leaf, as `--config.KEY` names them."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from flat_items(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value
