"""Data parallelism over every device of every host.

One mesh axis, "data", spans all devices of all processes. Batches are split
along it; parameters and optimizer state are replicated. `jax.jit` then
inserts the gradient all-reduce itself, which is what `pmap` with `pmean`
did by hand. Nothing here depends on the kind of device.
"""

import os
import queue
import threading
from typing import Any, Iterable, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

DATA_AXIS = 'data'
# config.distributed.initialize: start jax.distributed when the environment
# names a cluster, always, or never.
DISTRIBUTED_MODES = ('auto', 'always', 'never')

# Environment variables that mean "this process is one of several".
_CLUSTER_VARIABLES = ('JAX_COORDINATOR_ADDRESS', 'TPU_WORKER_HOSTNAMES',
                      'MEGASCALE_COORDINATOR_ADDRESS', 'OMPI_COMM_WORLD_SIZE')


def _in_cluster() -> bool:
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    return True
  hostnames = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if ',' in hostnames:
    return True
  return any(os.environ.get(name) for name in _CLUSTER_VARIABLES
             if name != 'TPU_WORKER_HOSTNAMES')


def initialize_distributed(config) -> None:
  """Starts jax.distributed when `config` (config.distributed) asks for it.

  Must run before anything touches a device.
  """
  mode = config.initialize
  explicit = bool(config.coordinator_address)
  if mode == 'never' or (mode == 'auto' and not explicit and not _in_cluster()):
    return
  kwargs: dict[str, Any] = {}
  if explicit:
    kwargs = dict(coordinator_address=config.coordinator_address,
                  num_processes=config.num_processes,
                  process_id=config.process_id)
  kwargs['initialization_timeout'] = int(config.timeout_seconds)
  # A process whose peer died stops waiting after this long, with an error,
  # at a collective operation as at the barrier of its exit.
  kwargs['heartbeat_timeout_seconds'] = int(config.timeout_seconds)
  kwargs['shutdown_timeout_seconds'] = int(config.timeout_seconds)
  jax.distributed.initialize(**kwargs)
  logging.info('jax.distributed: process %d of %d, %d local of %d devices',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Leading axis split over all devices."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def global_batch(local_batch: dict[str, np.ndarray],
                 mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Joins each process's part of a batch into one array over all devices.

  Every process passes the same number of examples; process i's examples
  become rows [i * n, (i + 1) * n) of the global batch.
  """
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, value)
          for name, value in local_batch.items()}


class DevicePrefetch:
  """Global batches of `local_batches`, put on the devices `size` ahead.

  A background thread takes each local batch (dict of numpy arrays) and
  starts its transfer (`global_batch`), so that reading and copying the
  next batches overlaps the device's work on this one. An error of the
  reader reaches the consumer at the batch where it happened. `close()`
  stops the thread; use it as a context manager.
  """

  # How long close() waits for the thread, which may be inside a read:
  # the reader has its own deadline, so this only bounds a stuck one.
  _JOIN_SECONDS = 120.0

  def __init__(self, local_batches: Iterable[dict[str, np.ndarray]],
               mesh: jax.sharding.Mesh, size: int = 2):
    self._batches = iter(local_batches)
    self._mesh = mesh
    self._queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True,
                                    name='device-prefetch')
    self._thread.start()

  def _offer(self, item) -> bool:
    """Queues `item` unless stopped first; False when stopped."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _fill(self) -> None:
    try:
      for local in self._batches:
        if not self._offer((global_batch(local, self._mesh), None)):
          return
    except BaseException as error:  # pylint: disable=broad-except
      self._offer((None, error))
      return
    self._offer((None, None))

  def __iter__(self) -> Iterator[dict[str, jax.Array]]:
    return self

  def __next__(self) -> dict[str, jax.Array]:
    batch, error = self._queue.get()
    if error is not None:
      self._stop.set()
      raise error
    if batch is None:
      self._stop.set()
      raise StopIteration
    return batch

  def close(self) -> None:
    self._stop.set()
    self._thread.join(self._JOIN_SECONDS)
    # Batches read ahead may hold the reader's shared memory (a CPU device
    # uses host buffers in place): let them go now.
    while not self._queue.empty():
      self._queue.get_nowait()
    if not self._thread.is_alive() and hasattr(self._batches, 'close'):
      # Ends the reader's worker processes now rather than at exit.
      self._batches.close()

  def __enter__(self) -> 'DevicePrefetch':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def to_host(tree) -> Any:
  """Fetches (possibly sharded, multi-process) arrays as whole numpy arrays."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def local_batch_size(global_size: int) -> int:
  """This process's share of `global_size`, a multiple of the device count."""
  return global_size // jax.process_count()


def sync(name: str) -> None:
  """Waits until every process reaches this point (no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
