"""Batches from reader worker processes in shared memory that is reused.

Grain hands a worker's output over in shared memory made for each batch and
unlinked once the batch is dropped, so every page of every batch is new to
the kernel: on the 2-core machine of docs/performance.md a new page cost
2.7 to 3.4 us on its first touch and under 0.03 us after, in four runs of
benchmarks/input.py (`fresh_shared_memory_us_per_page`), about 2 ms of a
K = 16 clip's work in a worker.

Here each worker keeps a pool of blocks in /dev/shm and stacks each batch
straight into a free one, and Grain carries only a `BlockBatch`, the
block's name and layout. The reading process maps a block the first time
it sees it and unlinks its name at once (the two mappings keep the memory),
and hands the block back by marking it free when the last array of the
batch is gone; a CPU device may compute on those arrays in place, and then
holds them. A worker makes a new block only when none of its own is free,
so the pool grows to the batches the reader holds at once, and a consumer
that keeps batches is never waited on.

Where /dev/shm does not exist, batches are plain arrays and Grain copies
them as before.
"""

import dataclasses
import itertools
import mmap
import os
import pathlib
import secrets
import weakref
from typing import Iterable

import numpy as np

from pasnet_jax.data.errors import DatasetError

_SHM = pathlib.Path('/dev/shm')
# Bytes before a block's arrays, which start aligned; byte 0 is its state.
_HEADER = 64
_ALIGN = 64
_FREE, _HELD = 0, 1

# Set in a worker process by start_worker.
_worker_blocks = None


@dataclasses.dataclass(frozen=True)
class BlockBatch:
  """A batch in a worker's block: what the reading process needs to map it.

  fields: (key, shape, dtype name, byte offset) of each array.
  """
  name: str
  size: int
  fields: tuple[tuple[str, tuple[int, ...], str, int], ...]


def _layout(shapes: dict[str, tuple[tuple[int, ...], np.dtype]]
            ) -> tuple[tuple[tuple[str, tuple[int, ...], str, int], ...], int]:
  """(fields, bytes) of arrays of `shapes` placed one after another."""
  fields, offset = [], _HEADER
  for key, (shape, dtype) in shapes.items():
    fields.append((key, shape, dtype.str, offset))
    nbytes = int(np.prod(shape)) * dtype.itemsize
    offset += -(-nbytes // _ALIGN) * _ALIGN
  return tuple(fields), offset


def _arrays(buffer, fields) -> dict[str, np.ndarray]:
  return {key: np.ndarray(shape, np.dtype(dtype), buffer=buffer, offset=offset)
          for key, shape, dtype, offset in fields}


def _map(path: pathlib.Path, size: int, create: bool) -> mmap.mmap:
  flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
  fd = os.open(path, flags, 0o600)
  try:
    if create:
      # Claims the pages now: a full /dev/shm is an error here rather than
      # a SIGBUS at the first write into the mapping.
      os.posix_fallocate(fd, 0, size)
    return mmap.mmap(fd, size)
  finally:
    os.close(fd)


class _WorkerBlocks:
  """A worker's blocks, named <prefix><pid>-<n>."""

  def __init__(self, prefix: str):
    self._prefix = f'{prefix}{os.getpid()}-'
    self._blocks: list[tuple[str, mmap.mmap]] = []

  def take(self, shapes) -> tuple[dict[str, np.ndarray], BlockBatch]:
    fields, size = _layout(shapes)
    for name, block in self._blocks:
      if block[0] == _FREE and len(block) >= size:
        break
    else:
      name = f'{self._prefix}{len(self._blocks)}'
      try:
        block = _map(_SHM / name, size, create=True)
      except OSError as e:
        raise DatasetError(f'Cannot make a {size}-byte batch block in {_SHM} '
                           f'({e}); free space there or use smaller '
                           'batches.') from e
      self._blocks.append((name, block))
    block[0] = _HELD
    return _arrays(block, fields), BlockBatch(name, len(block), fields)

  def unlink(self) -> None:
    for name, _ in self._blocks:
      (_SHM / name).unlink(missing_ok=True)


def start_worker(prefix: str) -> None:
  """In a worker process: batches from now on go into blocks named
  <prefix>..., which the Receiver of that prefix maps and cleans up."""
  global _worker_blocks
  if _SHM.is_dir():
    _worker_blocks = _WorkerBlocks(prefix)


def unlink_worker_blocks() -> None:
  """In a worker whose reading process is gone: nobody else will."""
  if _worker_blocks is not None:
    _worker_blocks.unlink()


def stack(examples: Iterable[dict[str, np.ndarray]], size: int
          ) -> dict[str, np.ndarray] | BlockBatch:
  """The `size` examples stacked along a new first axis: into a block in a
  worker process, else into new arrays."""
  examples = iter(examples)
  first = next(examples)
  shapes = {key: ((size, *np.shape(value)), np.asarray(value).dtype)
            for key, value in first.items()}
  if _worker_blocks is None:
    arrays, batch = {key: np.empty(*spec) for key, spec in shapes.items()}, None
  else:
    arrays, batch = _worker_blocks.take(shapes)
  for row, example in enumerate(itertools.chain([first], examples)):
    for key, value in example.items():
      arrays[key][row] = value
  if row + 1 != size:
    raise ValueError(f'stack expected {size} examples, got {row + 1}')
  return arrays if batch is None else batch


def _release(block: mmap.mmap) -> None:
  block[0] = _FREE


class Receiver:
  """The reading process's side: batches out of the workers' blocks."""

  def __init__(self):
    self.prefix = f'pasnet-{os.getpid()}-{secrets.token_hex(4)}-'
    self._blocks: dict[str, mmap.mmap] = {}

  def open(self, element):
    """`element` with a BlockBatch replaced by its arrays."""
    if not isinstance(element, BlockBatch):
      return element
    block = self._blocks.get(element.name)
    if block is None:
      path = _SHM / element.name
      try:
        block = _map(path, element.size, create=False)
      except OSError as e:
        raise DatasetError(f'A reader worker\'s batch block {path} cannot be '
                           f'opened ({e}).') from e
      path.unlink()
      self._blocks[element.name] = block
    # The batch's arrays are views of `anchor`, which lives as long as any
    # of them does.
    anchor = np.ndarray((element.size,), np.uint8, buffer=block)
    weakref.finalize(anchor, _release, block)
    return _arrays(anchor, element.fields)

  def close(self) -> None:
    """Unlinks the blocks of stopped workers that were never received. A
    block's memory goes when the last array of it does."""
    self._blocks = {}
    for path in _SHM.glob(f'{self.prefix}*'):
      path.unlink(missing_ok=True)
