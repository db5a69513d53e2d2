"""Profiler traces of a few steps, viewable in TensorBoard or Perfetto.

Two ways in:

  # Inside a training loop: trace steps first_step .. first_step + steps - 1.
  tracer = profiling.StepTracer(logdir, first_step=start + 2, steps=3)
  for step in ...:
    tracer.before(step)
    state, metrics = train_step(state, batch)
    tracer.after(step, metrics)     # blocks on `metrics` when a trace ends
  tracer.close()                    # stops a trace still open (early exit)

  # Around any jitted call: `warmup` untraced calls (compilation), then
  # `steps` traced ones, each waited for.
  profiling.trace_calls(step_fn, args, logdir, steps=3)

The trace lands in `logdir/plugins/profile/<run>/` (the layout TensorBoard's
profile plugin reads: `tensorboard --logdir LOGDIR`); the `.trace.json.gz`
file there also opens in https://ui.perfetto.dev.
"""

import contextlib
import os
import time
from typing import Any, Callable, Sequence

import jax


@contextlib.contextmanager
def trace(logdir: str, create_perfetto_link: bool = False):
  """jax.profiler.trace into `logdir`, creating the folder first."""
  os.makedirs(logdir, exist_ok=True)
  with jax.profiler.trace(logdir, create_perfetto_link=create_perfetto_link):
    yield logdir


class StepTracer:
  """Traces `steps` consecutive steps of a loop, starting at `first_step`.

  Skip the first step or two (compilation) by choosing `first_step`. With
  `steps` <= 0 or `enabled` False every method is a no-op, so a loop can call
  it unconditionally. Only one trace can be open per process.
  """

  def __init__(self, logdir: str, first_step: int, steps: int,
               enabled: bool = True):
    self.logdir = logdir
    self.first_step = first_step
    self.last_step = first_step + steps - 1
    self.enabled = enabled and steps > 0
    self.active = False
    self.done = False

  def before(self, step: int) -> None:
    """Call before running `step`; starts the trace at `first_step`."""
    if self.enabled and not self.active and not self.done and step >= self.first_step:
      os.makedirs(self.logdir, exist_ok=True)
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def after(self, step: int, outputs: Any = None) -> None:
    """Call after dispatching `step`; ends the trace after `last_step`.

    `outputs` (any pytree of arrays) is waited for before the trace stops,
    so the traced steps' device work is inside the trace.
    """
    if self.active and step >= self.last_step:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      self.done = True


def trace_calls(fn: Callable, args: Sequence[Any], logdir: str, steps: int = 3,
                warmup: int = 1, feed: Callable[[Any], Sequence[Any]] | None = None
                ) -> list[float]:
  """Runs fn(*args) `warmup` times untraced, then `steps` times traced.

  feed: for functions whose outputs become their next inputs (a training
  step with donated state), maps an output to the next call's args.
  Returns the wall-clock seconds of each traced call.
  """
  for _ in range(warmup):
    out = jax.block_until_ready(fn(*args))
    if feed is not None:
      args = feed(out)
  seconds = []
  with trace(logdir):
    for _ in range(steps):
      start = time.perf_counter()
      with jax.profiler.StepTraceAnnotation('step', step_num=len(seconds)):
        out = jax.block_until_ready(fn(*args))
      seconds.append(time.perf_counter() - start)
      if feed is not None:
        args = feed(out)
  return seconds
