"""profiling.top_ops: where a traced program's device time went."""

import gzip
import json
import os

import jax
import jax.numpy as jnp
import pytest

from pasnet_jax import profiling


def _write_trace(logdir, events):
  folder = os.path.join(logdir, 'plugins', 'profile', '2026_11_27_09_00_00')
  os.makedirs(folder)
  with gzip.open(os.path.join(folder, 'host.perfetto_trace.json.gz'), 'wt') as f:
    json.dump({'traceEvents': events}, f)


def _meta(kind, pid, name, tid=None):
  event = {'ph': 'M', 'pid': pid, 'name': kind, 'args': {'name': name}}
  if tid is not None:
    event['tid'] = tid
  return event


def test_cpu_trace_of_a_convolution_counts_its_ops(tmp_path):
  def step(x, kernel):
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(jax.nn.relu(y))

  args = (jnp.ones((2, 32, 32, 16)), jnp.ones((3, 3, 16, 16)))
  seconds = profiling.trace_calls(jax.jit(step), args, str(tmp_path), steps=2)
  summary = profiling.top_ops(str(tmp_path))

  assert len(seconds) == 2
  assert summary['ops'], summary['lines']
  assert summary['total_ms'] > 0
  # Every op is one of the kinds, so the kinds add up to the total.
  assert sum(ms for _, ms in summary['kinds']) == pytest.approx(summary['total_ms'])
  assert all(count >= 1 for _, _, count in summary['ops'])
  assert 'device op time' in profiling.format_top_ops(summary)


def test_gpu_trace_sums_stream_kernels_by_kind(tmp_path):
  # The layout a jax.profiler trace of an H200 had: one device process whose
  # kernels sit on a stream line, beside the host's Python line.
  gpu, host = 701, 1
  events = [
      _meta('process_name', gpu, '/device:GPU:0'),
      _meta('thread_name', gpu, 'Stream #14(Compute,Memset)', tid=5),
      _meta('process_name', host, '/host:CPU'),
      _meta('thread_name', host, 'python3', tid=9),
      {'ph': 'X', 'pid': host, 'tid': 9, 'ts': 0, 'dur': 5000.0, 'name': 'PjitFunction(step)'},
  ]
  for ts, (name, dur) in enumerate([('sm80_xmma_fprop_indexed', 1800.0),
                                    ('sm80_xmma_fprop_indexed', 1700.0),
                                    ('loop_convert_fusion', 400.0),
                                    ('loop_convert_fusion.2', 100.0)]):
    events.append({'ph': 'X', 'pid': gpu, 'tid': 5, 'ts': ts * 10000, 'dur': dur,
                   'name': name})
  _write_trace(str(tmp_path), events)

  summary = profiling.top_ops(str(tmp_path), top=2)

  assert summary['total_ms'] == pytest.approx(4.0)
  assert summary['ops'] == [('sm80_xmma_fprop_indexed', pytest.approx(3.5), 2),
                            ('loop_convert_fusion', pytest.approx(0.4), 1)]
  assert summary['kinds'] == [('sm80_xmma_fprop_indexed', pytest.approx(3.5)),
                              ('loop_convert_fusion', pytest.approx(0.5))]
  assert '87.5 %' in profiling.format_top_ops(summary)


def test_trace_without_device_ops_says_which_lines_it_had(tmp_path):
  _write_trace(str(tmp_path), [
      _meta('process_name', 1, '/host:CPU'),
      _meta('thread_name', 1, 'python3', tid=9),
      {'ph': 'X', 'pid': 1, 'tid': 9, 'ts': 0, 'dur': 10.0, 'name': 'PjitFunction(f)'}])

  text = profiling.format_top_ops(profiling.top_ops(str(tmp_path)))

  assert text.startswith('no device ops found')
  assert '/host:CPU / python3' in text


def test_missing_trace_names_the_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    profiling.top_ops(str(tmp_path))
