"""TensorBoard event files written without TensorFlow.

tf.summary and tensorboard's own writers import TensorFlow when it is
installed, which a training process must not (it claims accelerator memory
beside JAX). An event file is a record file of Event protos: this writes
them with tensorboard's protos and record framing, which need neither.
"""

import os
import socket
import time

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter


class EventLog:
  """Scalars for TensorBoard in one new event file under `logdir`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    # TensorBoard reads files named *tfevents*; the name keeps runs apart.
    name = (f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.'
            f'{os.getpid()}.pasnet_jax')
    self._file = open(os.path.join(logdir, name), 'wb')
    self._records = RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(),
                                file_version='brain.Event:2'))

  def _write(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())

  def scalars(self, step: int, values: dict[str, float]) -> None:
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
        for tag, value in values.items()])
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary))
    self._file.flush()

  def close(self) -> None:
    self._file.close()
