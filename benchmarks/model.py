"""PAS-Net in JAX against the PyTorch reference, side by side in one process.

    .venv/bin/python benchmarks/model.py                 # default grid, ~15 min on 2 cores
    .venv/bin/python benchmarks/model.py --grid=full     # K=4,8,16 x B=1..8 (hours on a CPU)
    .venv/bin/python benchmarks/model.py --grid=tiny --size=64   # smoke test, seconds
    python benchmarks/model.py --grid=gpu                # on a GPU: bf16 and fp32 at K=16,
                                                         # and the largest batch predicted to fit
    .venv/bin/python benchmarks/model.py --styles=A --modes=infer,train --frames=4,8 --batches=1,2
                                                         # any product of styles, modes, K, B, dtypes

Each row runs the same work on both sides, with the same weights and the
same float32 input (B, K, 224, 224, 3) RGB 0..255:
  - the project's jitted `PASNet` (fusion "A" = ECO, or "A+pool(I)+pool(F)");
  - `convert.torch_models.PASNet` in eager PyTorch, with as many threads as
    JAX's CPU backend uses (every core), or on the same GPU, in each
    configuration of TORCH_CONFIGS (default; channels-last 2D convolutions;
    on a GPU also torch.compile, with cudnn.benchmark on throughout). The
    JAX/PyTorch ratio is against the fastest of them.
JAX's inference and frozen-pose training rows get OpenPose's kernel
transforms (7 x 7 spectra, 3 x 3 Winograd kernels) prepared once per set of
weights (models/transform_conv.py), as the training loop and the inference
programs do; --pose-conv=direct for lax.conv. The preparation's time and
the transforms' bytes are reported per row.
Modes: `infer` (eval mode, no gradient); `train` (one step of the jitted
training step `pasnet_jax.train.create_training` builds, with ECO's partial
BatchNorm and the SGD recipe of configs/default.py at a constant learning
rate; the pose branch frozen); `train-pose` (the same with OpenPose trained
too). The PyTorch side follows the same recipe and BatchNorm freezing rule.

Per row: median seconds over --repeats timed calls after --warmup untimed
ones, the two sides' timed calls alternating (compilation is outside both
and reported on its own), clips/s, the
JAX/PyTorch time ratio, GFLOPs of the program by XLA's cost analysis (on a
GPU that of the same program lowered for the CPU, since cuDNN convolutions
escape the GPU count; PyTorch is credited with the same count), GFLOP/s and its
fraction of the matrix-multiply peak measured in the same run (a large
`jnp.dot` of the row's dtype), and peak memory: on a CPU the rise of the
process's resident memory while the row runs (sampled every 2 ms), on a GPU
XLA's buffer assignment for JAX and torch.cuda.max_memory_allocated for
PyTorch (both over the warm-up calls). On a GPU, MFU is GFLOP/s over the card's dense bf16 peak
(--peak-tflops, 989 for an H100/H200).

Writes --out (JSON, rewritten after every row, so a cut-short run keeps what
it measured) and --plot (PNG: clips/s against K), and prints the table.
"""

import argparse
import copy
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import threading
import time
import traceback

# On a GPU let JAX and PyTorch share the card: JAX allocates as it goes
# instead of taking 75 % up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.95')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from configs import default  # noqa: E402
from pasnet_jax import parallel  # noqa: E402
from pasnet_jax import provenance  # noqa: E402
from pasnet_jax import train  # noqa: E402
from pasnet_jax.models import layers  # noqa: E402
from pasnet_jax.models import transform_conv  # noqa: E402
from pasnet_jax.models.pasnet import (  # noqa: E402
    create_model, PASNet, pose_transform_kernels, with_pose_transforms)

STYLES = ('A', 'A+pool(I)+pool(F)')
MODES = ('infer', 'train', 'train-pose')
NUM_CLASSES = 101
# ECO-pytorch's SGD (configs/default.py), which both sides follow.
RECIPE = default.get_config().optimizer
# ECO-pytorch's partial BatchNorm, on both sides.
BN_POLICY = 'partial'
# Dense bf16 tensor-core peak, TFLOP/s (H100 SXM and H200 share the chip).
GPU_BF16_PEAK_TFLOPS = {'H100': 989.0, 'H200': 989.0, 'A100': 312.0}
FULL = 'A+pool(I)+pool(F)'


@dataclasses.dataclass(frozen=True)
class Spec:
  style: str
  mode: str
  frames: int
  batch: int
  dtype: str = 'float32'

  @property
  def label(self) -> str:
    return f'{self.style} {self.mode} K={self.frames} B={self.batch} {self.dtype}'


def grid(name: str) -> list[Spec]:
  """The named grids. Rows run in this order (most wanted first)."""
  if name == 'default':
    # Sized for a 2-core CPU: about 15 minutes in all (PAS-Net is ~97
    # GFLOPs a frame, so its rows stay at B=1 and K<=8).
    return ([Spec(s, 'infer', k, 1) for s in (FULL, 'A') for k in (4, 8)] +
            [Spec('A', 'infer', 16, 1)] +
            [Spec(FULL, 'train', 4, 1)] +
            [Spec('A', 'train', k, 1) for k in (4, 8, 16)] +
            [Spec(FULL, 'train-pose', 4, 1)])
  if name == 'full':
    return [Spec(s, m, k, b) for s in STYLES for m in MODES
            for k in (4, 8, 16) for b in (1, 2, 4, 8)
            if not (s == 'A' and m == 'train-pose')]
  if name == 'gpu':
    # The largest-batch search runs after the first four (--largest-batch-after).
    return ([Spec(FULL, 'train', 16, 8, 'bfloat16'),
             Spec(FULL, 'train', 16, 8, 'float32'),
             Spec(FULL, 'infer', 16, 8, 'float32'),
             Spec(FULL, 'infer', 16, 8, 'bfloat16'),
             Spec(FULL, 'train', 16, 32, 'bfloat16'),
             Spec(FULL, 'train-pose', 16, 8, 'bfloat16'),
             Spec('A', 'train', 16, 8, 'bfloat16'),
             Spec('A', 'infer', 16, 8, 'bfloat16')])
  if name == 'tiny':
    return [Spec(s, m, 4, b) for s in STYLES for m in MODES for b in (1, 2)
            if not (s == 'A' and m == 'train-pose')]
  raise ValueError(f'unknown grid {name!r}')


# ---------------------------------------------------------------- measuring

def _rss_bytes() -> int:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class PeakRss:
  """Highest resident memory above the level at entry, sampled every 2 ms."""

  def __enter__(self):
    self.base = self.peak = _rss_bytes()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll, daemon=True)
    self._thread.start()
    return self

  def _poll(self):
    while not self._stop.wait(0.002):
      self.peak = max(self.peak, _rss_bytes())

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _rss_bytes())
    self.rise = self.peak - self.base


def time_calls(run, warmup: int, repeats: int) -> list[float]:
  """Wall-clock seconds of `repeats` calls of run() after `warmup` calls.

  run() must return only when its work is done (block_until_ready or a
  device synchronisation).
  """
  for _ in range(warmup):
    run()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    seconds.append(time.perf_counter() - start)
  return seconds


def matmul_peak(dtype: str, size: int, repeats: int = 5) -> dict:
  """GFLOP/s of a size x size x size jnp.dot (the median of `repeats`)."""
  key = jax.random.key(0)
  a = jax.random.normal(key, (size, size), jnp.dtype(dtype))
  b = jax.random.normal(jax.random.fold_in(key, 1), (size, size), jnp.dtype(dtype))
  dot = jax.jit(jnp.dot)
  seconds = time_calls(lambda: dot(a, b).block_until_ready(), 2, repeats)
  return {'dtype': dtype, 'size': size, 'seconds': float(np.median(seconds)),
          'gflops_per_s': 2 * size ** 3 / float(np.median(seconds)) / 1e9}


def torch_matmul(torch, device, dtype, size: int, repeats: int = 5) -> dict:
  tdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[dtype]
  a = torch.randn(size, size, device=device, dtype=tdtype)
  b = torch.randn(size, size, device=device, dtype=tdtype)

  def run():
    torch.mm(a, b)
    _torch_sync(torch, device)
  seconds = time_calls(run, 2, repeats)
  return {'dtype': dtype, 'size': size, 'seconds': float(np.median(seconds)),
          'gflops_per_s': 2 * size ** 3 / float(np.median(seconds)) / 1e9}


def _torch_sync(torch, device):
  if device.type == 'cuda':
    torch.cuda.synchronize()


# ---------------------------------------------------------------- models

def torch_reference(torch, style: str, seed: int = 0):
  """convert.torch_models.PASNet with He-normal weights (no denormals, no
  vanishing signal through OpenPose's 60 layers)."""
  from convert import torch_models
  generator = torch.Generator().manual_seed(seed)
  model = torch_models.PASNet(NUM_CLASSES, fusion=style)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
        fan_in = module.weight[0].numel()
        module.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
        if module.bias is not None:
          module.bias.normal_(0.0, 0.05, generator=generator)
  return model


def flax_variables_from(torch_model, style: str) -> dict:
  """The Flax PASNet variables holding `torch_model`'s weights."""
  from convert.torch_io import flax_array
  model = PASNet(NUM_CLASSES, fusion=style)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 1, 32, 32, 3), jnp.float32))
  state = torch_model.state_dict()
  torch_leaf = {'kernel': 'weight', 'bias': 'bias', 'scale': 'weight',
                'mean': 'running_mean', 'var': 'running_var'}
  flat = {}
  for path, leaf in traverse_util.flatten_dict(shapes).items():
    _, part, *layer, name = path
    if part in ('appearance', 'spatiotemporal'):
      prefix = f'eco.base_model.{layer[0]}'
    elif part == 'pose':
      prefix = f'openpose.{layer[0]}'
    elif part == 'classifier':
      prefix = 'eco.new_fc'
    elif part == 'fusion':
      prefix = 'fusion_conv'
    else:
      raise KeyError(path)
    tensor = state[f'{prefix}.{torch_leaf[name]}']
    array = flax_array(name, tensor)
    if array.shape != leaf.shape:
      raise ValueError(f'{path}: {array.shape} != {leaf.shape}')
    flat[path] = jnp.asarray(array)
  return traverse_util.unflatten_dict(flat)


def row_config(spec: Spec, remat: bool = False):
  """The training config of a row: ECO-pytorch's SGD at a constant learning
  rate, its partial BatchNorm, one batch per step."""
  config = default.get_config()
  config.model.fusion = spec.style
  config.model.dtype = spec.dtype
  config.model.bn_policy = BN_POLICY
  config.model.freeze_pose = spec.mode != 'train-pose'
  config.model.remat = remat
  config.optimizer.decay_at = ()
  config.batch_size = spec.batch
  config.accumulation_steps = 1
  return config


def jax_program(spec: Spec, variables: dict, video, labels, remat: bool = False,
                device=None, pose_conv: str = 'auto', transforms: dict | None = None):
  """(jitted function, its arguments) of a row on `device` (default: the
  first): the forward pass, or the training step pasnet_jax.train builds
  with its state donated; either given the pose `transforms` (their
  collection).
  Arguments may be abstract (jax.ShapeDtypeStruct), for counting FLOPs
  without any data."""
  config = row_config(spec, remat)
  model = create_model(config.model, NUM_CLASSES).clone(pose_conv=pose_conv)
  if spec.mode == 'infer':
    if transforms:
      variables = {**variables, transform_conv.TRANSFORMS: transforms}
    return jax.jit(lambda v, x: model.apply(v, x, train=False)), (variables, video)
  if not isinstance(video, jax.ShapeDtypeStruct):
    # Copies, so that the donated state never aliases the shared variables.
    variables = jax.tree_util.tree_map(jnp.array, variables)
  mesh = parallel.make_mesh([device or jax.devices()[0]])
  # No decays in a timed step: the rate is the same at any length.
  schedule = train.learning_rate_schedule(config, config.optimizer.learning_rate,
                                          num_steps=1)
  state, step = train.create_training(config, model, variables, schedule, mesh)
  collection = {transform_conv.TRANSFORMS: transforms} if transforms else {}
  return step, (state, {'video': video, 'label': labels}, collection)


def count_flops(spec: Spec, size: int, remat: bool = False,
                pose_conv: str = 'auto', transforms: dict | None = None) -> float:
  """FLOPs of a row's program by XLA's CPU cost analysis, from shapes alone.

  On a GPU the compiled program's convolutions are cuDNN calls that XLA's
  cost analysis does not count, so every backend's rows use this count.
  """
  model = create_model(row_config(spec).model, NUM_CLASSES)
  video = jax.ShapeDtypeStruct((spec.batch, spec.frames, size, size, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((spec.batch,), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jax.ShapeDtypeStruct((1, 1, 32, 32, 3), jnp.float32))
  if transforms:
    transforms = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), transforms)
  fn, args = jax_program(spec, variables, video, labels, remat,
                         device=jax.devices('cpu')[0], pose_conv=pose_conv,
                         transforms=transforms)
  flops = _flops(fn.trace(*args).lower(lowering_platforms=('cpu',)).cost_analysis())
  if flops == 0.0:
    # JAX 0.11 no longer counts a lowered program; a program compiled for
    # the host CPU is still counted (this costs one CPU compilation).
    on_host = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
    args = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_host), args)
    flops = _flops(fn.trace(*args).lower().compile().cost_analysis())
  return flops


def _flops(cost) -> float:
  if isinstance(cost, list):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


class JaxRunner:
  """Compiles and runs one row's JAX program."""

  def __init__(self, spec: Spec, variables: dict, video: np.ndarray,
               labels: np.ndarray, remat: bool = False, pose_conv: str = 'auto',
               transforms: dict | None = None):
    self.spec, self.remat = spec, remat
    self.pose_conv, self.transforms = pose_conv, transforms
    self.fn, self.args = jax_program(spec, variables, jax.device_put(video),
                                     jax.device_put(labels), remat,
                                     pose_conv=pose_conv, transforms=transforms)

  def compile(self, compiler_options: dict | None = None) -> float:
    start = time.perf_counter()
    self.lowered = self.fn.lower(*self.args)
    if compiler_options:
      self.compiled = self.lowered.compile(compiler_options=compiler_options)
    else:
      self.compiled = self.lowered.compile()
    return time.perf_counter() - start

  def cost(self, count: bool = True) -> dict:
    if not count:
      flops = 0.0
    elif jax.default_backend() == 'cpu':
      flops = _flops(self.compiled.cost_analysis())
    else:
      video = self.args[1] if self.spec.mode == 'infer' else self.args[1]['video']
      flops = count_flops(self.spec, video.shape[2], self.remat, self.pose_conv,
                          self.transforms)
    out = {'flops': flops}
    try:
      memory = self.compiled.memory_analysis()
      out['xla_bytes'] = int(memory.argument_size_in_bytes + memory.output_size_in_bytes
                             + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
      out['xla_temp_bytes'] = int(memory.temp_size_in_bytes)
    except Exception:  # not every backend reports it
      pass
    return out

  def run(self):
    out = jax.block_until_ready(self.compiled(*self.args))
    if self.spec.mode != 'infer':
      self.args = (out[0], *self.args[1:])
    self.last = out
    return out


def torch_configs(on_gpu: bool) -> tuple[str, ...]:
  """The PyTorch configurations each row times: on this project's 2-core
  CPU channels-last was 1.12x slower than the default for OpenPose, but
  that is a measurement, not a rule, so both run."""
  return ('default', 'channels_last') + (('compile',) if on_gpu else ())


def torch_side(config: str) -> str:
  return 'torch' if config == 'default' else f'torch_{config}'


class TorchRunner:
  """One row's work in PyTorch, on the same weights and input, in one of
  torch_configs(): 'default' (eager, contiguous NCHW), 'channels_last' (the
  2D convolutions' weights, hence their outputs, channels-last; 3D kernels
  have no 4D format) or 'compile' (torch.compile of the default)."""

  def __init__(self, torch, spec: Spec, model, video: np.ndarray,
               labels: np.ndarray, device, config: str = 'default'):
    self.torch, self.spec, self.device = torch, spec, device
    if config == 'channels_last':
      model = copy.deepcopy(model)
      for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
          module.to(memory_format=torch.channels_last)
    self.model = model
    self.forward = torch.compile(model) if config == 'compile' else model
    self.video = torch.from_numpy(
        np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3))).to(device)
    self.labels = torch.from_numpy(labels.astype(np.int64)).to(device)
    self.autocast = spec.dtype == 'bfloat16'
    if spec.mode == 'infer':
      model.eval()
      return
    freeze_pose = spec.mode != 'train-pose'
    # The model's BatchNorm freezing rule: a frozen BatchNorm runs on its
    # running statistics with its affine untrained.
    model.train()
    for name, module in model.eco.base_model.named_children():
      if (isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)) and
          layers.batchnorm_frozen(BN_POLICY, name)):
        module.eval()
        for p in module.parameters():
          p.requires_grad_(False)
    if model.openpose is not None:
      for p in model.openpose.parameters():
        p.requires_grad_(not freeze_pose)
    trainable = [p for p in model.parameters() if p.requires_grad]
    self.trainable = trainable
    self.optimizer = torch.optim.SGD(
        [{'params': [p for p in trainable if p.dim() > 1], 'weight_decay': RECIPE.weight_decay},
         {'params': [p for p in trainable if p.dim() <= 1], 'weight_decay': 0.0}],
        lr=RECIPE.learning_rate, momentum=RECIPE.momentum)

  def run(self):
    torch = self.torch
    ctx = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast
           else _nullcontext())
    if self.spec.mode == 'infer':
      with torch.inference_mode(), ctx:
        self.last = self.forward(self.video)
      _torch_sync(torch, self.device)
      return self.last
    self.optimizer.zero_grad(set_to_none=True)
    with ctx:
      logits = self.forward(self.video)
      loss = torch.nn.functional.cross_entropy(logits.float(), self.labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.trainable, RECIPE.clip_norm)
    self.optimizer.step()
    _torch_sync(torch, self.device)
    return loss


class _nullcontext:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


# ---------------------------------------------------------------- one row

def _memory_available() -> int:
  with open('/proc/meminfo') as f:
    for line in f:
      if line.startswith('MemAvailable:'):
        return int(line.split()[1]) * 1024
  return 1 << 62


def _is_oom(error: Exception) -> bool:
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def row_transforms(spec: Spec, args, ctx) -> tuple[dict | None, dict]:
  """(the pose transforms, {their preparation time, bytes}) where the row's
  model runs them, as pasnet_jax.train and inference decide; else
  (None, {})."""
  model = create_model(row_config(spec, args.remat).model, NUM_CLASSES).clone(
      pose_conv=args.pose_conv)
  kernel_sizes = pose_transform_kernels(model, args.size, args.size,
                                        train=spec.mode != 'infer')
  if not kernel_sizes:
    return None, {}
  return ctx['transforms'](spec.style, kernel_sizes)


def run_row(spec: Spec, args, ctx) -> dict:
  """Measures one row on both sides; returns its record."""
  row = dataclasses.asdict(spec)
  # Other processes on the machine slow both sides; the load shows it.
  row['loadavg_1min_before'] = os.getloadavg()[0]
  rng = np.random.default_rng(spec.frames * 100 + spec.batch)
  video = rng.uniform(0, 255, (spec.batch, spec.frames, args.size, args.size, 3)
                      ).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, spec.batch).astype(np.int32)
  on_gpu = ctx['backend'] == 'gpu'

  torch_model, variables = ctx['models'](spec.style, fresh=True)
  row['jax'] = jax_result = {}
  transforms, prepared = row_transforms(spec, args, ctx)
  jax_result.update(prepared)
  jax_runner = JaxRunner(spec, variables, video, labels, remat=args.remat,
                         pose_conv=args.pose_conv, transforms=transforms)
  jax_result['compile_s'] = jax_runner.compile()
  jax_result.update(jax_runner.cost(count=not args.no_flops))
  if transforms and not args.no_flops:
    # Both sides are credited with the direct convolutions' FLOPs, the work
    # the network defines; XLA's count of the FFT program is kept beside.
    jax_result['xla_flops'] = jax_result['flops']
    jax_result['flops'] = count_flops(spec, args.size, args.remat, 'direct')
  flops = jax_result['flops']
  ctx.setdefault('xla_bytes', {})[spec] = jax_result.get('xla_bytes')
  peak = ctx['peaks'][spec.dtype]['gflops_per_s']
  need = jax_result.get('xla_bytes', 0)
  if not on_gpu and need > 0.85 * _memory_available():
    row['skipped'] = f'needs ~{need / 2**30:.1f} GiB, more than is free'
    return row

  sides = {'jax': (jax_runner, jax_result)}
  if args.torch:
    for config in torch_configs(on_gpu):
      row[torch_side(config)] = {}
      sides[torch_side(config)] = (
          TorchRunner(ctx['torch'], spec, torch_model, video, labels,
                      ctx['device'], config), row[torch_side(config)])

  def call(kind, record):
    """One call of a side; False once that side has failed."""
    runner, result = sides[kind]
    if 'error' in result:
      return False
    try:
      start = time.perf_counter()
      runner.run()
      if record:
        result.setdefault('all_seconds', []).append(time.perf_counter() - start)
      return True
    except Exception as error:  # noqa: BLE001 - report and go on
      result['error'] = f'{type(error).__name__}: {str(error)[:300]}'
      if not _is_oom(error):
        traceback.print_exc()
      return False

  # Warm-up calls, one side after the other; memory is measured over them.
  for kind in sides:
    if on_gpu and kind.startswith('torch'):
      ctx['torch'].cuda.reset_peak_memory_stats()
    with PeakRss() as rss:
      for _ in range(max(args.warmup, 1)):
        call(kind, record=False)
    if on_gpu:
      sides[kind][1]['peak_bytes'] = (int(ctx['torch'].cuda.max_memory_allocated())
                                      if kind.startswith('torch')
                                      else jax_result.get('xla_bytes'))
    else:
      sides[kind][1]['peak_bytes'] = int(rss.rise)
  # Timed calls alternate between the sides, so that a change in the load
  # that other processes put on the machine falls on both.
  for _ in range(args.repeats):
    for kind in sides:
      call(kind, record=True)

  for kind, (runner, result) in sides.items():
    seconds = result.get('all_seconds')
    if 'error' in result or not seconds:
      continue
    median = float(np.median(seconds))
    result.update(seconds=median, min_seconds=float(np.min(seconds)),
                  clips_per_s=spec.batch / median,
                  gflops_per_s=flops / median / 1e9,
                  peak_fraction=flops / median / 1e9 / peak)
    if on_gpu:
      result['mfu_bf16'] = flops / median / (ctx['bf16_peak_tflops'] * 1e12)
  timed_torch = {kind: result['seconds'] for kind, (_, result) in sides.items()
                 if kind.startswith('torch') and 'seconds' in result}
  if (spec.mode == 'infer' and 'torch' in timed_torch and 'seconds' in jax_result):
    logits = np.asarray(jax_runner.last, np.float32)
    reference = sides['torch'][0].last.float().cpu().numpy()
    row['max_logit_difference'] = float(np.max(np.abs(logits - reference)))
  if timed_torch and 'seconds' in jax_result:
    fastest = min(timed_torch, key=timed_torch.get)
    row['torch_fastest'] = fastest
    row['jax_over_torch'] = jax_result['seconds'] / timed_torch[fastest]
    if 'torch' in timed_torch:
      row['jax_over_torch_default'] = jax_result['seconds'] / timed_torch['torch']
  sides.clear()
  del jax_runner
  if on_gpu and args.torch:
    ctx['torch'].cuda.empty_cache()
  row['loadavg_1min_after'] = os.getloadavg()[0]
  return row


def largest_batch(spec: Spec, args, ctx, probes=(2, 8)) -> dict:
  """The largest batch of `spec` (batch ignored) whose step fits the device.

  XLA's buffer assignment at two batch sizes gives bytes = a + b * batch,
  which predicts the batch that fills the device. With --verify-largest the
  prediction is then run for real, lowered by 10 % per out-of-memory
  failure (slow: on an H200 compiling K=16 at batch ~500 took over 4 min).
  """
  _, variables = ctx['models'](spec.style)
  stats = jax.devices()[0].memory_stats() or {}
  limit = (args.memory_limit_gb * 2**30 if args.memory_limit_gb
           else stats.get('bytes_limit') or _memory_available())
  sizes = {}
  result = {'style': spec.style, 'mode': spec.mode, 'frames': spec.frames,
            'dtype': spec.dtype, 'bytes_limit': int(limit)}
  for batch in probes:
    probe = dataclasses.replace(spec, batch=batch)
    if ctx.get('xla_bytes', {}).get(probe):  # compiled for a timed row already
      sizes[batch] = ctx['xla_bytes'][probe]
      continue
    runner = JaxRunner(probe, variables,
                       np.zeros((batch, spec.frames, args.size, args.size, 3), np.float32),
                       np.zeros(batch, np.int32), remat=args.remat)
    runner.compile()
    sizes[batch] = runner.cost().get('xla_bytes', 0)
    print(f'    batch {batch}: XLA buffers {sizes[batch] / 2**30:.2f} GiB', flush=True)
    del runner
  (b0, m0), (b1, m1) = sorted(sizes.items())
  slope = (m1 - m0) / (b1 - b0)
  fixed = m0 - slope * b0
  predicted = int((0.97 * limit - fixed) // slope) if slope > 0 else 0
  result.update(probe_bytes={str(k): v for k, v in sizes.items()},
                bytes_per_clip=slope, predicted=predicted)
  if not args.verify_largest:
    return result
  batch = predicted
  for _ in range(3):
    if batch < 1:
      break
    probe = dataclasses.replace(spec, batch=batch)
    try:
      runner = JaxRunner(probe, variables,
                         np.zeros((batch, spec.frames, args.size, args.size, 3),
                                  np.float32),
                         np.zeros(batch, np.int32), remat=args.remat)
      # Autotuning every convolution at a batch this large takes minutes;
      # the default algorithms answer whether it fits.
      options = {'xla_gpu_autotune_level': 0} if ctx['backend'] == 'gpu' else None
      print(f'    trying batch {batch}', flush=True)
      try:
        result['verify_compile_s'] = runner.compile(options)
      except Exception as error:  # noqa: BLE001 - option unknown to this JAX
        if _is_oom(error):
          raise
        result['verify_compile_s'] = runner.compile()
      seconds = time_calls(runner.run, 1, 3)
      median = float(np.median(seconds))
      flops = runner.cost()['flops']
      result.update(largest_batch=batch, seconds=median, clips_per_s=batch / median,
                    mfu_bf16=flops / median / (ctx['bf16_peak_tflops'] * 1e12))
      del runner
      return result
    except Exception as error:  # noqa: BLE001
      if not _is_oom(error):
        result['error'] = f'{type(error).__name__}: {str(error)[:300]}'
        return result
      result.setdefault('failed', []).append(batch)
      batch = int(batch * 0.9)
  return result


# ---------------------------------------------------------------- output

def environment(ctx) -> dict:
  env = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
         'python': platform.python_version(), 'jax': jax.__version__,
         'numpy': np.__version__, 'backend': ctx['backend'],
         'device': str(jax.devices()[0].device_kind),
         'cpu_count': os.cpu_count(), 'XLA_FLAGS': os.environ.get('XLA_FLAGS', '')}
  try:
    import flax
    import jaxlib
    env.update(flax=flax.__version__, jaxlib=jaxlib.__version__)
  except Exception:  # noqa: BLE001
    pass
  try:
    with open('/proc/cpuinfo') as f:
      env['cpu'] = next(line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  if ctx.get('torch') is not None:
    torch = ctx['torch']
    env.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
               torch_device=str(ctx['device']))
    if ctx['device'].type == 'cuda':
      env['torch_gpu'] = torch.cuda.get_device_name()
  env.update(provenance.git_state(REPO))
  return env


def _fmt(value, spec='.2f', missing='-'):
  return missing if value is None else format(value, spec)


def format_table(results: dict) -> str:
  on_gpu = results['environment']['backend'] == 'gpu'
  lines = []
  for peak in results['matmul'].values():
    lines.append(f"matmul peak {peak['dtype']} ({peak['size']}^3 jnp.dot): "
                 f"{peak['gflops_per_s']:.1f} GFLOP/s")
  for peak in results.get('torch_matmul', {}).values():
    lines.append(f"  torch.mm {peak['dtype']} for comparison: {peak['gflops_per_s']:.1f} GFLOP/s")
  frac = 'MFU' if on_gpu else '%peak'
  header = (f"{'style':<18}{'mode':<11}{'K':>3}{'B':>3} {'dtype':<9}"
            f"{'jax s':>9}{'torch s':>9}{'j/t':>6}{'jax c/s':>9}{'trch c/s':>9}"
            f"{'GFLOPs':>9}{'jax GF/s':>10}{'%mm':>5}{'trch GF/s':>10}{'%mm':>5}")
  if on_gpu:
    header += f"{'jMFU':>6}{'tMFU':>6}"
  header += f"{'compile':>8}{'jax MB':>8}{'trch MB':>8}{'load':>5}"
  lines += ['', header, '-' * len(header)]
  for row in results['rows']:
    j, t = row.get('jax', {}), row.get(row.get('torch_fastest', 'torch'), {})
    mb = lambda r: None if r.get('peak_bytes') is None else r['peak_bytes'] / 2**20
    pct = lambda r: None if r.get('peak_fraction') is None else 100 * r['peak_fraction']
    line = (f"{row['style']:<18}{row['mode']:<11}{row['frames']:>3}{row['batch']:>3} "
            f"{row['dtype']:<9}{_fmt(j.get('seconds'), '.3f'):>9}"
            f"{_fmt(t.get('seconds'), '.3f'):>9}{_fmt(row.get('jax_over_torch')):>6}"
            f"{_fmt(j.get('clips_per_s'), '.3f'):>9}{_fmt(t.get('clips_per_s'), '.3f'):>9}"
            f"{_fmt(j.get('flops', 0) / 1e9, '.1f'):>9}{_fmt(j.get('gflops_per_s'), '.1f'):>10}"
            f"{_fmt(pct(j), '.0f'):>5}{_fmt(t.get('gflops_per_s'), '.1f'):>10}"
            f"{_fmt(pct(t), '.0f'):>5}")
    if on_gpu:
      mfu = lambda r: None if r.get('mfu_bf16') is None else 100 * r['mfu_bf16']
      line += f"{_fmt(mfu(j), '.1f'):>6}{_fmt(mfu(t), '.1f'):>6}"
    load = max(row.get('loadavg_1min_before', 0), row.get('loadavg_1min_after', 0))
    line += (f"{_fmt(j.get('compile_s'), '.1f'):>8}{_fmt(mb(j), '.0f'):>8}"
             f"{_fmt(mb(t), '.0f'):>8}{load:>5.1f}")
    for side, r in (('jax', j), ('torch', t)):
      if 'error' in r:
        line += f'  [{side}: {r["error"][:60]}]'
    if 'skipped' in row:
      line += f"  [skipped: {row['skipped']}]"
    lines.append(line)
  lines.append(f"(%mm: achieved GFLOP/s over the matmul peak of the row's dtype{'; MFU: over the ' + str(results['environment'].get('bf16_peak_tflops')) + ' TFLOP/s dense bf16 peak' if on_gpu else ''}; "
               'torch is credited with XLA\'s FLOP count of the direct convolutions; '
               'j/t: against the fastest PyTorch configuration; memory: '
               + ('XLA buffers (jax), max_memory_allocated (torch)' if on_gpu
                  else 'peak rise of resident memory while the row ran')
               + '; load: 1-minute load average around the row, which other processes raise)')
  for row in results['rows']:
    configs = [(side, row[side]['seconds']) for side in row
               if side.startswith('torch') and isinstance(row[side], dict)
               and 'seconds' in row[side]]
    notes = []
    if configs:
      notes.append('PyTorch ' + ', '.join(f'{side} {seconds:.3f} s'
                                          for side, seconds in configs))
    if row.get('jax', {}).get('transform_bytes'):
      j = row['jax']
      notes.append(f"JAX pose transforms {j['transform_bytes'] / 1e9:.2f} GB, prepared "
                   f"once in {j['transform_prepare_s']:.1f} s")
    if notes:
      lines.append(f"{row['style']} {row['mode']} K={row['frames']} B={row['batch']}: "
                   + '; '.join(notes))
  for extra in results.get('compile_checks', []):
    lines.append(f"compile only: {extra['style']} {extra['mode']} K={extra['frames']} "
                 f"B={extra['batch']} remat={extra['remat']}: {extra['compile_s']:.1f} s")
  for found in results.get('largest_batch', []):
    lines.append(f"largest batch {found['style']} {found['mode']} K={found['frames']} "
                 f"{found['dtype']}: predicted {found.get('predicted')} (XLA buffers), ran "
                 f"{found.get('largest_batch', '-')} ({_fmt(found.get('clips_per_s'), '.1f')} clips/s, "
                 f"MFU {_fmt(100 * found['mfu_bf16'] if 'mfu_bf16' in found else None, '.1f')} %), "
                 f"{found['bytes_per_clip'] / 2**30:.2f} GiB a clip"
                 + (f", failed at {found['failed']}" if found.get('failed') else ''))
  return '\n'.join(lines)


def plot(results: dict, path: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = [r for r in results['rows'] if 'jax' in r]
  modes = [m for m in MODES if any(r['mode'] == m for r in rows)]
  if not modes:
    return
  fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
  env = results['environment']
  for ax, mode in zip(axes[0], modes):
    for style in STYLES:
      for dtype in ('float32', 'bfloat16'):
        chosen = [r for r in rows if r['mode'] == mode and r['style'] == style
                  and r['dtype'] == dtype]
        if not chosen:
          continue
        batch = min(r['batch'] for r in chosen)
        chosen = sorted((r for r in chosen if r['batch'] == batch), key=lambda r: r['frames'])
        for side, marker, line in (('jax', 'o', '-'), ('torch', 's', '--')):
          points = [(r['frames'], r[side]['clips_per_s']) for r in chosen
                    if r.get(side, {}).get('clips_per_s')]
          if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=marker, linestyle=line,
                    label=f"{'JAX' if side == 'jax' else 'PyTorch'} {style} B={batch} {dtype}")
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xticks([4, 8, 16])
    ax.set_xlim(3, 22)
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel('frames per clip K')
    ax.set_ylabel('clips / s')
    ax.set_title(mode)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"PAS-Net {results['size']}x{results['size']}: {env['device']}"
               f" ({env.get('cpu', '')[:40]}), jax {env['jax']}, torch {env.get('torch', '-')}",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------- main

def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--grid', default=None, choices=('default', 'full', 'gpu', 'tiny'),
                      help='named grid of rows (default: "gpu" on a GPU, else "default")')
  parser.add_argument('--styles', help=f'comma-separated, from {STYLES}; with --modes '
                      '--frames --batches --dtypes replaces the grid by their product')
  parser.add_argument('--modes', help=f'comma-separated, from {MODES}')
  parser.add_argument('--frames', help='comma-separated K values')
  parser.add_argument('--batches', help='comma-separated batch sizes')
  parser.add_argument('--dtypes', help='comma-separated: float32, bfloat16')
  parser.add_argument('--size', type=int, default=224, help='frame height and width')
  parser.add_argument('--repeats', type=int, default=3, help='timed calls per side and row')
  parser.add_argument('--warmup', type=int, default=1, help='untimed calls before them')
  parser.add_argument('--no-torch', dest='torch', action='store_false',
                      help='time JAX alone')
  parser.add_argument('--remat', action='store_true', help='PASNet(remat=True)')
  parser.add_argument('--pose-conv', default='auto', choices=('auto', 'direct', 'transform'),
                      help='PASNet(pose_conv=...); inference rows get the pose transforms '
                      'prepared unless "direct"')
  parser.add_argument('--transform-memory-limit-gb', type=float,
                      default=transform_conv.DEFAULT_MEMORY_LIMIT / 2**30,
                      help='largest pose transforms prepared (beyond it: direct convolutions)')
  parser.add_argument('--no-flops', action='store_true',
                      help='leave FLOPs at 0, to count them later with --recount-flops '
                      '(off a CPU, counting compiles every row once more for the host)')
  parser.add_argument('--matmul-size', type=int, default=None,
                      help='side of the peak-measuring matmul (4096 CPU, 8192 GPU)')
  parser.add_argument('--compile-check', default=None,
                      help='K values at which to time compiling the PAS-Net training '
                      'step alone (B=1, with and without remat); "" for none '
                      '(default 16 on a CPU, none on a GPU)')
  parser.add_argument('--largest-batch', default=None, choices=('on', 'off'),
                      help='search the largest training batch at K=16 (GPU only; '
                      'default on there)')
  parser.add_argument('--memory-limit-gb', type=float, default=None,
                      help='device memory for --largest-batch (default: what JAX reports)')
  parser.add_argument('--verify-largest', action='store_true',
                      help='run the predicted largest batch (compiles at that size)')
  parser.add_argument('--recount-flops', metavar='JSON', default=None,
                      help='recount the FLOPs of a results file\'s rows with XLA\'s '
                      'CPU cost analysis (for files from GPU runs made before the '
                      'count came from there), rewrite --out, table and plot')
  parser.add_argument('--largest-batch-frames', type=int, default=16,
                      help='K of the largest-batch search')
  parser.add_argument('--largest-batch-after', type=int, default=4,
                      help='run the largest-batch search after this many rows')
  parser.add_argument('--peak-tflops', type=float, default=None,
                      help='the device\'s dense bf16 peak for MFU (GPU; default by name)')
  parser.add_argument('--deadline', type=float, default=None,
                      help='seconds after which no new row starts (results so far are kept)')
  parser.add_argument('--out', default=None, help='JSON path (default benchmarks/results/model_<backend>.json)')
  parser.add_argument('--plot', default=None, help='PNG path (default beside --out)')
  parser.add_argument('--profile', default=None,
                      help='write a profiler trace of the first row\'s JAX calls to this folder '
                      'and print where their device time went, op by op')
  return parser.parse_args(argv)


def choose_rows(args, backend: str) -> list[Spec]:
  custom = [args.styles, args.modes, args.frames, args.batches, args.dtypes]
  if any(custom) and args.grid is None:
    split = lambda s, default: [x for x in (s.split(',') if s else default) if x]
    styles = split(args.styles, [FULL])
    for s in styles:
      if s not in STYLES:
        raise SystemExit(f'unknown style {s!r}; valid: {STYLES}')
    modes = split(args.modes, ['infer'])
    for m in modes:
      if m not in MODES:
        raise SystemExit(f'unknown mode {m!r}; valid: {MODES}')
    return [Spec(s, m, int(k), int(b), d) for s in styles for m in modes
            for k in split(args.frames, ['8']) for b in split(args.batches, ['1'])
            for d in split(args.dtypes, ['float32'])
            if not (s == 'A' and m == 'train-pose')]
  return grid(args.grid or ('gpu' if backend == 'gpu' else 'default'))


def recount(args) -> None:
  """Recomputes FLOPs and the figures derived from them in a results file."""
  with open(args.recount_flops) as f:
    results = json.load(f)
  bf16_peak = results['environment'].get('bf16_peak_tflops')
  for row in results['rows']:
    spec = Spec(row['style'], row['mode'], row['frames'], row['batch'], row['dtype'])
    flops = count_flops(spec, results['size'], results.get('remat', False))
    row['jax']['flops_before_recount'] = row['jax'].get('flops')
    row['jax']['flops'] = flops
    peak = results['matmul'][spec.dtype]['gflops_per_s']
    for side in ('jax', 'torch'):
      result = row.get(side, {})
      if 'seconds' in result:
        result['gflops_per_s'] = flops / result['seconds'] / 1e9
        result['peak_fraction'] = result['gflops_per_s'] / peak
        if bf16_peak:
          result['mfu_bf16'] = flops / result['seconds'] / (bf16_peak * 1e12)
  results['flops_recounted'] = 'XLA CPU cost analysis of the same programs'
  out = args.out or args.recount_flops
  with open(out, 'w') as f:
    json.dump(results, f, indent=1)
  print(format_table(results))
  plot_path = args.plot or os.path.splitext(out)[0] + '.png'
  plot(results, plot_path)
  print(f'wrote {out} and {plot_path}')


def main(argv=None):
  args = parse_args(argv)
  if args.recount_flops:
    return recount(args)
  started = time.perf_counter()
  backend = jax.default_backend()
  on_gpu = backend == 'gpu'
  rows = choose_rows(args, backend)
  dtypes = sorted({spec.dtype for spec in rows} | ({'bfloat16'} if on_gpu else set()))
  out = args.out or os.path.join(REPO, 'benchmarks', 'results', f'model_{backend}.json')
  plot_path = args.plot or os.path.splitext(out)[0] + '.png'
  os.makedirs(os.path.dirname(os.path.abspath(out)) or '.', exist_ok=True)

  ctx = {'backend': backend, 'torch': None}
  if args.torch:
    import torch
    ctx['torch'] = torch
    if on_gpu and torch.cuda.is_available():
      ctx['device'] = torch.device('cuda')
      torch.backends.cudnn.benchmark = True
    else:
      ctx['device'] = torch.device('cpu')
      # Same cores as XLA's CPU backend, which uses all of them.
      torch.set_num_threads(os.cpu_count() or 1)
  device_kind = jax.devices()[0].device_kind
  ctx['bf16_peak_tflops'] = args.peak_tflops or next(
      (v for k, v in GPU_BF16_PEAK_TFLOPS.items() if k in device_kind), float('nan'))

  results = {'size': args.size, 'repeats': args.repeats, 'warmup': args.warmup,
             'remat': args.remat, 'pose_conv': args.pose_conv, 'environment': environment(ctx), 'rows': []}
  if on_gpu:
    results['environment']['bf16_peak_tflops'] = ctx['bf16_peak_tflops']
  print(json.dumps(results['environment']), flush=True)

  size = args.matmul_size or (8192 if on_gpu else 4096)
  ctx['peaks'] = results['matmul'] = {d: matmul_peak(d, size) for d in dtypes}
  if args.torch:
    results['torch_matmul'] = {d: torch_matmul(ctx['torch'], ctx['device'], d, size)
                               for d in dtypes}
  for peak in results['matmul'].values():
    print(f"matmul {peak['dtype']}: {peak['gflops_per_s']:.1f} GFLOP/s", flush=True)

  cache = {}

  def models(style, fresh=False):
    """(torch model, Flax variables) with the same weights; `fresh` undoes
    what earlier rows' training steps did to the torch model."""
    if style not in cache:
      cache.clear()  # one style's weights at a time
      import torch as torch_module  # the weights come from the reference
      torch_model = torch_reference(torch_module, style)
      variables = flax_variables_from(torch_model, style)
      initial = {k: v.clone() for k, v in torch_model.state_dict().items()}
      if args.torch:
        torch_model.to(ctx['device'])
      cache[style] = (torch_model, variables, initial)
    torch_model, variables, initial = cache[style]
    if fresh and args.torch:
      torch_model.load_state_dict(initial)
    return torch_model, variables
  ctx['models'] = models

  prepared_transforms = {}

  def transforms(style, kernel_sizes):
    """(the pose transforms of `style`'s weights for kernels of
    `kernel_sizes`, {time, bytes}), prepared once."""
    key = style, kernel_sizes
    if key not in prepared_transforms:
      _, variables = models(style)
      start = time.perf_counter()
      with_transforms = jax.block_until_ready(with_pose_transforms(
          variables, int(args.transform_memory_limit_gb * 2**30), kernel_sizes))
      prepared = with_transforms.get(transform_conv.TRANSFORMS)
      prepared_transforms.clear()
      prepared_transforms[key] = prepared, {
          'transform_prepare_s': time.perf_counter() - start,
          'transform_bytes': transform_conv.total_bytes(prepared or {})}
    return prepared_transforms[key]
  ctx['transforms'] = transforms

  def save():
    with open(out, 'w') as f:
      json.dump(results, f, indent=1)

  def late():
    return args.deadline is not None and time.perf_counter() - started > args.deadline

  if args.profile and rows:
    from pasnet_jax import profiling
    spec = rows[0]
    torch_model, variables = models(spec.style)
    rng = np.random.default_rng(0)
    transforms, _ = row_transforms(spec, args, ctx)
    runner = JaxRunner(spec, variables,
                       rng.uniform(0, 255, (spec.batch, spec.frames, args.size, args.size, 3)
                                   ).astype(np.float32),
                       np.zeros(spec.batch, np.int32), remat=args.remat,
                       pose_conv=args.pose_conv, transforms=transforms)
    runner.compile()
    calls = 3
    profiling.trace_calls(lambda: runner.run(), (), args.profile, steps=calls)
    print(f'profile of {spec.label} ({calls} calls) written to {args.profile}', flush=True)
    del runner
    try:
      summary = profiling.top_ops(args.profile)
      results['profile'] = {**dataclasses.asdict(spec), 'calls': calls, **summary}
      print(profiling.format_top_ops(summary), flush=True)
    except (OSError, ValueError, KeyError) as error:
      print(f'no op summary of the trace: {error}', flush=True)

  searched = False

  def search_largest():
    nonlocal searched
    searched = True
    search = args.largest_batch == 'on' or (args.largest_batch is None and on_gpu)
    if search and not on_gpu and not args.memory_limit_gb:
      # Host memory has no hard limit XLA knows of: a search there ends in
      # the kernel's OOM killer, which may pick another process.
      print('--largest-batch needs a GPU (or --memory-limit-gb); skipped', flush=True)
      return
    if not search or late():
      return
    spec = Spec(FULL, 'train', args.largest_batch_frames, 1,
                'bfloat16' if on_gpu else 'float32')
    print(f'[{time.perf_counter() - started:6.0f} s] largest batch, {spec.label}', flush=True)
    if ctx.get('torch') is not None and on_gpu:
      ctx['torch'].cuda.empty_cache()
    try:
      found = largest_batch(spec, args, ctx)
    except Exception as error:  # noqa: BLE001
      traceback.print_exc()
      found = {**dataclasses.asdict(spec), 'error': str(error)[:300], 'bytes_per_clip': 0}
    print(f'    {found}', flush=True)
    results.setdefault('largest_batch', []).append(found)
    save()

  for index, spec in enumerate(rows):
    if index == args.largest_batch_after and not searched:
      search_largest()
    if late():
      print(f'deadline reached; skipping {spec.label}', flush=True)
      results.setdefault('not_run', []).append(spec.label)
      continue
    print(f'[{time.perf_counter() - started:6.0f} s] {spec.label}', flush=True)
    try:
      row = run_row(spec, args, ctx)
    except Exception as error:  # noqa: BLE001 - keep the rows measured so far
      traceback.print_exc()
      row = {**dataclasses.asdict(spec), 'error': f'{type(error).__name__}: {str(error)[:300]}'}
    results['rows'].append(row)
    j, t = row.get('jax', {}), row.get(row.get('torch_fastest', 'torch'), {})
    print(f"    jax {_fmt(j.get('seconds'), '.3f')} s (compile {_fmt(j.get('compile_s'), '.1f')} s),"
          f" torch {_fmt(t.get('seconds'), '.3f')} s ({row.get('torch_fastest', '-')}),"
          f" ratio {_fmt(row.get('jax_over_torch'))}",
          flush=True)
    save()

  check = args.compile_check if args.compile_check is not None else ('' if on_gpu else '16')
  checks = [int(k) for k in check.split(',') if k]
  for frames in checks:
    for remat in (False, True):
      if late():
        break
      spec = Spec(FULL, 'train', frames, 1, 'bfloat16' if on_gpu else 'float32')
      _, variables = models(FULL)
      runner = JaxRunner(spec, variables,
                         np.zeros((1, frames, args.size, args.size, 3), np.float32),
                         np.zeros(1, np.int32), remat=remat)
      seconds = runner.compile()
      del runner
      results.setdefault('compile_checks', []).append(
          {**dataclasses.asdict(spec), 'remat': remat, 'compile_s': seconds})
      print(f'compile {spec.label} remat={remat}: {seconds:.1f} s', flush=True)
      save()

  if not searched:
    search_largest()

  results['total_seconds'] = time.perf_counter() - started
  save()
  table = format_table(results)
  print('\n' + table)
  try:
    plot(results, plot_path)
    print(f'wrote {out} and {plot_path}')
  except Exception:  # noqa: BLE001 - the JSON and table still stand
    traceback.print_exc()
    print(f'wrote {out} (plot failed)')


if __name__ == '__main__':
  main()
