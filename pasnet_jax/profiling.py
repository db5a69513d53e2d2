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

import collections
import contextlib
import glob
import gzip
import json
import os
import re
import time
from typing import Any, Callable, Sequence

import jax


@contextlib.contextmanager
def trace(logdir: str, create_perfetto_link: bool = False):
  """jax.profiler.trace into `logdir`, creating the folder first."""
  os.makedirs(logdir, exist_ok=True)
  with jax.profiler.trace(logdir, create_perfetto_link=create_perfetto_link,
                          create_perfetto_trace=True):
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


# Host-side wrappers of XLA:CPU's executor: they span the ops, not add to them.
_CPU_WRAPPERS = ('ThunkExecutor', 'Await', 'end: ')


def top_ops(logdir: str, top: int = 15) -> dict:
  """Where the device time of the newest trace under `logdir` went.

  Reads the Perfetto JSON that `trace` writes. On a GPU it sums the events
  of the device's "XLA Ops" lines (one per HLO op run); on the CPU, the ops
  that XLA's worker threads ran. Returns {'total_ms', 'ops': [(name, ms,
  count)], 'kinds': [(kind, ms)]}, a kind being an op's name without its
  numeric suffix (all `convolution.N` together, say), and 'lines', the
  trace's busiest (process / thread) lines with their event counts; times
  are summed over every traced call.
  """
  paths = sorted(glob.glob(os.path.join(logdir, 'plugins', 'profile', '*',
                                        '*perfetto_trace.json.gz')))
  if not paths:
    raise FileNotFoundError(f'no perfetto_trace.json.gz under {logdir}')
  with gzip.open(paths[-1]) as f:
    trace_json = json.load(f)
  events = trace_json['traceEvents'] if isinstance(trace_json, dict) else trace_json
  process_names, thread_names = {}, {}
  for event in events:
    if event.get('ph') == 'M' and event.get('name') == 'process_name':
      process_names[event['pid']] = event['args']['name']
    elif event.get('ph') == 'M' and event.get('name') == 'thread_name':
      thread_names[(event['pid'], event.get('tid'))] = event['args']['name']
  on_device = {key for key in thread_names
               if '/device:' in process_names.get(key[0], '')}
  # Per HLO op where the trace has that line, else per kernel on the streams.
  device_ops = ({key for key in on_device if thread_names[key] == 'XLA Ops'} or
                {key for key in on_device if 'Stream' in thread_names[key]})

  def counted(event):
    key = (event['pid'], event.get('tid'))
    if device_ops:
      return key in device_ops
    return (thread_names.get(key, '').startswith('tf_XLA')
            and not any(w in event['name'] for w in _CPU_WRAPPERS))

  total_us, count = collections.Counter(), collections.Counter()
  for event in events:
    if event.get('ph') == 'X' and counted(event):
      total_us[event['name']] += event.get('dur', 0.0)
      count[event['name']] += 1
  kinds = collections.Counter()
  for name, us in total_us.items():
    kinds[re.sub(r'(\.\d+)+$', '', name)] += us
  lines = collections.Counter(
      f"{process_names.get(e['pid'], e['pid'])} / {thread_names.get((e['pid'], e.get('tid')), '?')}"
      for e in events if e.get('ph') == 'X')
  return {'total_ms': sum(total_us.values()) / 1e3, 'lines': dict(lines.most_common(12)),
          'ops': [(name, us / 1e3, count[name]) for name, us in total_us.most_common(top)],
          'kinds': [(kind, us / 1e3) for kind, us in kinds.most_common(top)]}


def format_top_ops(summary: dict) -> str:
  """A printable table of `top_ops`."""
  total = summary['total_ms'] or 1.0
  if not summary['ops']:
    return ('no device ops found in the trace; its lines (process / thread: '
            f"events) were {summary['lines']}")
  lines = [f"device op time {summary['total_ms']:.1f} ms in all; by kind:"]
  lines += [f'  {ms:10.2f} ms {100 * ms / total:5.1f} %  {kind}'
            for kind, ms in summary['kinds']]
  lines.append('top ops:')
  lines += [f'  {ms:10.2f} ms {100 * ms / total:5.1f} % x{n:<4d} {name[:100]}'
            for name, ms, n in summary['ops']]
  return '\n'.join(lines)
