"""Batches handed from reader workers in reused shared memory (handoff)."""

import itertools
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pasnet_jax.data import handoff
from pasnet_jax.data import pipeline
from pasnet_jax.errors import DatasetError

SHM = pathlib.Path('/dev/shm')
BATCH = 3
# Seconds for workers to notice their reading process is gone (they look
# once a second).
DEADLINE = 30

pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason='needs /dev/shm')


def rows(row: int) -> dict[str, np.ndarray]:
  return {'x': np.full((4, 1000), row, np.int32), 'label': np.int32(row),
          'mask': np.bool_(row % 2)}


def _batches(num_batches: int, num_workers: int = 2):
  return pipeline.clip_batches(rows, batch_size=BATCH,
                               batches=range(num_batches),
                               num_workers=num_workers, description='rows')


def _expected(batch: int) -> dict[str, np.ndarray]:
  return handoff.stack(map(rows, range(batch * BATCH, (batch + 1) * BATCH)),
                       BATCH)


def _mapped_blocks() -> set[str]:
  """The batch blocks this process maps: unlinked, they still show in
  /proc/self/maps."""
  maps = pathlib.Path('/proc/self/maps').read_text().splitlines()
  return {line.split()[5] for line in maps
          if len(line.split()) > 5 and line.split()[5].startswith(
              str(SHM / 'pasnet-'))}


def _leftovers(pid: int) -> list[pathlib.Path]:
  return list(SHM.glob(f'pasnet-{pid}-*'))


def test_held_batches_keep_their_contents():
  held = list(_batches(24))
  assert len(held) == 24
  for number, batch in enumerate(held):
    expected = _expected(number)
    assert batch.keys() == expected.keys()
    for key in expected:
      assert batch[key].dtype == expected[key].dtype
      np.testing.assert_array_equal(batch[key], expected[key])
  assert _leftovers(os.getpid()) == []


def test_dropped_batches_free_their_blocks_for_reuse():
  mapped, mapped_at_50 = set(), None
  for number, batch in enumerate(_batches(150)):
    np.testing.assert_array_equal(batch['x'], _expected(number)['x'])
    del batch
    mapped |= _mapped_blocks()
    if number == 50:
      mapped_at_50 = set(mapped)
  # Each worker needs blocks for the batches in flight at once (Grain's
  # buffers; 7 a worker here), not one per batch: after the first batches
  # no new block is made.
  assert mapped == mapped_at_50
  assert 0 < len(mapped) <= 2 * 10, mapped


def test_stopping_early_leaves_nothing_in_dev_shm():
  batches = iter(_batches(1000))
  first = list(itertools.islice(batches, 3))
  batches.close()
  assert len(first) == 3
  assert _leftovers(os.getpid()) == []


def test_in_process_batches_are_plain_arrays():
  batch = next(iter(_batches(1, num_workers=0)))
  assert type(batch['x']) is np.ndarray and batch['x'].base is None
  np.testing.assert_array_equal(batch['label'], [0, 1, 2])


_KILLED_READER = """
import sys, time
from tests import test_data_handoff
batches = iter(test_data_handoff._batches(10**6))
next(batches)
print('reading', flush=True)
time.sleep(600)
"""


def test_workers_of_a_killed_reader_unlink_their_blocks():
  root = pathlib.Path(__file__).parents[1]
  reader = subprocess.Popen([sys.executable, '-c', _KILLED_READER], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    assert reader.stdout.readline() == b'reading\n', reader.stderr.read()
    # The workers keep blocks filled ahead of the reader.
    deadline = time.monotonic() + DEADLINE
    while not _leftovers(reader.pid) and time.monotonic() < deadline:
      time.sleep(0.1)
    assert _leftovers(reader.pid)
    reader.send_signal(signal.SIGKILL)
    reader.wait(DEADLINE)
    deadline = time.monotonic() + DEADLINE
    while _leftovers(reader.pid) and time.monotonic() < deadline:
      time.sleep(0.2)
    assert _leftovers(reader.pid) == []
  finally:
    reader.kill()
    reader.wait()
    for path in _leftovers(reader.pid):
      path.unlink()


def test_a_block_that_cannot_be_made_is_one_clear_error(monkeypatch, tmp_path):
  # A worker's view: blocks go under a folder that does not exist.
  monkeypatch.setattr(handoff, '_SHM', tmp_path / 'missing')
  monkeypatch.setattr(handoff, '_worker_blocks', handoff._WorkerBlocks('t-'))
  with pytest.raises(DatasetError,
                     match=r'Cannot make a \d+-byte batch block in .*missing'
                           r'.*free space there or use smaller batches'):
    handoff.stack(map(rows, range(BATCH)), BATCH)
