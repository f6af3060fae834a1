r"""Throughput of superconv's real train step, side by side with PyTorch, in one process run.

  python -m benchmarks.throughput --model resnet56 --batch 1000 --steps 50
  python -m benchmarks.throughput --model lenet --batch 512 --steps 40 --out benchmarks/results/cpu.json
  python -m benchmarks.throughput --dispatch resnet56,resnet20 --batch 8 --reps 9 --calls 100 \
      --out benchmarks/results/dispatch_cpu.json      # host cost of one dispatch, pytree vs packed
  python -m benchmarks.throughput --range-test resnet20 --batch 32 --steps 20 --reps 3 \
      --out benchmarks/results/range_test_cpu.json    # LR range-test sweep vs training, updates/s

For the JAX step it prints images/s, step time, compile time (kept out of the timings), host
overhead per step (time Python spends issuing a dispatch, divided by the updates in it), achieved
FLOP/s from XLA's cost analysis and its fraction of the device's peak, and peak memory. If PyTorch
imports, the same model, batch and optimizer (SGD, momentum 0.9, weight decay 1e-4) run in eager
mode and under `torch.compile`, and the ratios are printed. Data lives on the device for both, so
the comparison is of the training step itself. `--packed` times the packed-state step (as the
training loop runs it), `--profile DIR` adds a jax.profiler trace of one dispatch and its kernel
breakdown; research/gpu/perf.sh runs each GPU variant as one row.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from superconv import metrics as metrics_lib
from superconv import models
from superconv import sharding
from superconv import step as step_lib

# Dense peak FLOP/s by device kind and compute dtype (vendor datasheets; fp32 without TF32).
PEAK_FLOPS = {
    ('NVIDIA H200', 'bfloat16'): 989e12, ('NVIDIA H200', 'float32'): 67e12,
    ('NVIDIA H100 80GB HBM3', 'bfloat16'): 989e12, ('NVIDIA H100 80GB HBM3', 'float32'): 67e12,
    ('NVIDIA A100-SXM4-80GB', 'bfloat16'): 312e12, ('NVIDIA A100-SXM4-80GB', 'float32'): 19.5e12,
    ('TPU v4', 'bfloat16'): 275e12, ('TPU v5 lite', 'bfloat16'): 197e12,
}


def _image_shape(model_name):
  return (28, 28, 1) if model_name == 'lenet' else (32, 32, 3)


def _peak_memory_bytes():
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device peak_bytes_in_use'
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'host max RSS (CPU backend)'


def step_flops(model_name, batch, dtype, num_classes=10):
  """FLOPs of one update of the real train step, counted on the unoptimised program."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = models.create_model(model_name, num_classes=num_classes, dtype=dtype)
  tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
  shape = _image_shape(model_name)
  spec = step_lib.StepSpec(batch_size=batch, dtype=jnp.dtype(dtype))
  state = jax.eval_shape(lambda: step_lib.create_train_state(model, tx, jax.random.PRNGKey(0),
                                                          shape, mesh))
  data = {'images': jax.ShapeDtypeStruct((batch, *shape), jnp.uint8),
          'labels': jax.ShapeDtypeStruct((batch,), jnp.int32),
          'mean': jax.ShapeDtypeStruct(shape, jnp.float32)}
  cost = step_lib.make_train_fn(model, tx, mesh, spec, 1).lower(state, data).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get('flops', 0.0))


def kernel_breakdown(trace_dir, top=30):
  """Time per event name in a `jax.profiler` trace (its Perfetto JSON): on a GPU the kernels on
  the device streams, on the CPU the XLA ops on the host threads. Sorted, longest first."""
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True) +
                 glob.glob(os.path.join(trace_dir, '**', 'perfetto_trace.json.gz'), recursive=True))
  if not files:
    return {'error': f'no trace JSON under {trace_dir}'}
  with gzip.open(files[-1], 'rt') as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  names = {}
  for e in events:  # process names: tell device streams from host threads
    if e.get('ph') == 'M' and e.get('name') == 'process_name':
      names[e.get('pid')] = e.get('args', {}).get('name', '')
  total, count, where = {}, {}, {}
  for e in events:
    if e.get('ph') != 'X' or 'dur' not in e:
      continue
    proc = names.get(e.get('pid'), '')
    k = e.get('name', '?')
    if k.startswith('$') or 'python' in proc.lower():  # Python tracer frames: not XLA work
      continue
    total[k] = total.get(k, 0.0) + float(e['dur'])
    count[k] = count.get(k, 0) + 1
    where[k] = proc
  device = {k: v for k, v in total.items() if '/device:' in where[k].lower() or
            'gpu' in where[k].lower()}
  use = device or total
  rows = sorted(use.items(), key=lambda kv: -kv[1])[:top]
  return {'file': os.path.relpath(files[-1], trace_dir), 'scope': 'device' if device else 'all',
          'total_us': sum(use.values()), 'events': sum(count[k] for k in use),
          'top': [{'name': k[:120], 'us': v, 'calls': count[k], 'process': where[k]}
                  for k, v in rows]}


def bench_jax(model_name, batch, steps, steps_per_dispatch, dtype, num_classes=10, *,
              packed=False, profile_dir=''):
  """Times superconv's train step (shard_map over all devices, lax.scan, donation).

  `packed`: the packed-state step (`step.pack`, as the training loop runs it). `profile_dir`:
  after the timing, a `jax.profiler` trace of one dispatch there, and its kernel breakdown.
  """
  model, tx, state, data, spec, mesh = _bench_setup(model_name, batch, dtype, num_classes,
                                                    min_examples=0)
  t = time.perf_counter()
  cost_state = state
  if packed:
    state = step_lib.pack(state)
  compiled = step_lib.make_train_fn(model, tx, mesh, spec, steps_per_dispatch,
                                    packed=packed).lower(state, data).compile()
  compile_s = time.perf_counter() - t
  # FLOPs of ONE update from the unoptimised program: backend-independent (on GPU the compiled
  # program's convolutions are library calls that XLA's cost analysis does not count, and a
  # while loop's body is counted once whatever its trip count).
  cost = step_lib.make_train_fn(model, tx, mesh, spec, 1).lower(cost_state, data).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops_per_step = float((cost or {}).get('flops', 0.0))
  del cost_state

  state = compiled(state, data)  # warm-up
  jax.block_until_ready(state)
  dispatches = max(1, steps // steps_per_dispatch)
  t0 = time.perf_counter()
  for _ in range(dispatches):
    state = compiled(state, data)
  jax.block_until_ready(state)
  wall = time.perf_counter() - t0
  # Host overhead: the time Python needs to issue one dispatch while the device is idle (so
  # nothing else is waited on), per update it carries.
  issue_s = 0.0
  for _ in range(5):
    jax.block_until_ready(state)
    t = time.perf_counter()
    state = compiled(state, data)
    issue_s += time.perf_counter() - t
  jax.block_until_ready(state)
  breakdown = None
  if profile_dir:
    with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
      state = compiled(state, data)
      jax.block_until_ready(state)
    breakdown = kernel_breakdown(profile_dir)
    breakdown['updates'] = steps_per_dispatch
  done = dispatches * steps_per_dispatch
  step_s = wall / done
  kind = jax.devices()[0].device_kind
  peak = PEAK_FLOPS.get((kind, dtype))
  mem, mem_what = _peak_memory_bytes()
  achieved = flops_per_step / step_s if flops_per_step else None
  return {
      'framework': 'jax (superconv train step)', 'images_per_sec': batch / step_s,
      'step_ms': step_s * 1e3, 'compile_s': compile_s,
      'host_overhead_ms_per_step': issue_s / (5 * steps_per_dispatch) * 1e3,
      'flops_per_step': flops_per_step, 'achieved_tflops': achieved and achieved / 1e12,
      'peak_tflops': peak and peak / 1e12,
      'fraction_of_peak': (achieved / peak) if (achieved and peak) else None,
      'peak_memory_gib': mem / 2**30, 'memory_measure': mem_what,
      'steps_timed': done, 'devices': jax.device_count(), 'packed_state': packed,
      'steps_per_dispatch': steps_per_dispatch,
      **({'kernel_breakdown': breakdown} if breakdown else {}),
  }


def _bench_setup(model_name, batch, dtype='float32', num_classes=10, devices=None, lr=0.1,
                 min_examples=64):
  """Model, optimizer (SGD + momentum + weight decay, injected LR), state, data, spec and mesh
  as the training run builds them, on 4 batches (at least `min_examples`) of random data held
  on the device."""
  mesh = sharding.make_mesh(devices)
  model = models.create_model(model_name, num_classes=num_classes, dtype=dtype)
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=0.9)
  tx = optax.chain(optax.add_decayed_weights(1e-4), tx)
  shape = _image_shape(model_name)
  rng = np.random.default_rng(0)
  n = max(batch * 4, min_examples)
  data = sharding.replicate({
      'images': rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
      'labels': rng.integers(0, num_classes, size=(n,)).astype(np.int32),
      'mean': np.full(shape, 127.0, np.float32)}, mesh)
  spec = step_lib.StepSpec(batch_size=batch, mirror=True, crop_padding=0, scale=1 / 64,
                           dtype=jnp.dtype(dtype))
  state = step_lib.create_train_state(model, tx, jax.random.PRNGKey(0), shape, mesh)
  return model, tx, state, data, spec, mesh


def bench_dispatch(model_name, batch, calls, reps, dtype='float32'):
  """Host cost of one dispatch, pytree state against packed state, apart from the update time.

  Three numbers per form, interleaved over `reps` rounds (medians; the machine is shared):
  - identity_ms: the mean time to return from each of `calls` back-to-back calls of a donated
    jitted identity on the real state: the dispatch cost alone (arguments in, results out);
  - touch_ms: the same for a donated jitted `step + 1` (the packed form unpacks and packs
    inside: XLA folds the slices and concatenates back into the donated buffers, no copy);
  - step_issue_ms: the time to return from one call of the real train step while the device is
    idle (async dispatch: the call returns before the update has run);
  - update_ms: that call until its result is ready (the update itself).
  """
  model, tx, state, data, spec, mesh = _bench_setup(model_name, batch, dtype)
  n_arrays = len(jax.tree.leaves(state))
  packed = step_lib.pack(state)
  step_fn, compile_s = {}, {}
  for f, s in (('pytree', state), ('packed', packed)):
    t = time.perf_counter()
    step_fn[f] = step_lib.make_train_fn(model, tx, mesh, spec, 1, packed=f == 'packed').lower(
        s, data).compile()
    compile_s[f] = time.perf_counter() - t
  cheap = {'identity_ms': jax.jit(lambda s: s, donate_argnums=0),
           'touch_ms': jax.jit(lambda s: step_lib._on_pytree(  # pylint: disable=protected-access
               lambda t: t.replace(step=t.step + 1), s), donate_argnums=0)}
  states = {'pytree': state, 'packed': packed}
  samples = {f: {'identity_ms': [], 'touch_ms': [], 'step_issue_ms': [], 'update_ms': []}
             for f in states}
  for f in states:  # warm-up: compile the cheap functions, run each step once
    states[f] = step_fn[f](states[f], data)
    for fn in cheap.values():
      states[f] = fn(states[f])
  jax.block_until_ready(states)
  for _ in range(reps):
    for f in states:
      s = states[f]
      for name, fn in cheap.items():
        jax.block_until_ready(s)
        t = time.perf_counter()
        for _ in range(calls):
          s = fn(s)
        samples[f][name].append((time.perf_counter() - t) / calls * 1e3)
      jax.block_until_ready(s)
      t = time.perf_counter()
      s = step_fn[f](s, data)
      issued = time.perf_counter()
      jax.block_until_ready(s)
      done = time.perf_counter()
      samples[f]['step_issue_ms'].append((issued - t) * 1e3)
      samples[f]['update_ms'].append((done - t) * 1e3)
      states[f] = s
  out = {'model': model_name, 'batch': batch, 'dtype': dtype, 'state_arrays': n_arrays,
         'packed_buffers': len(packed.buffers), 'calls': calls, 'reps': reps}
  for f, d in samples.items():
    out[f] = {k: float(np.median(v)) for k, v in d.items()}
    # On a shared 2-core CPU the issuing thread is preempted by the update's own threads as soon
    # as they start: the fastest sample is the host cost, the median includes that contention.
    out[f]['step_issue_min_ms'] = float(np.min(d['step_issue_ms']))
    out[f]['compile_s'] = compile_s[f]
    out[f]['samples'] = {k: [round(x, 4) for x in v] for k, v in d.items()}
  out['identity_speedup'] = out['pytree']['identity_ms'] / out['packed']['identity_ms']
  out['touch_speedup'] = out['pytree']['touch_ms'] / out['packed']['touch_ms']
  out['step_issue_speedup'] = out['pytree']['step_issue_ms'] / out['packed']['step_issue_ms']
  return out


def bench_range_test(model_name, batch, steps, reps, dtype='float32'):
  """Updates per second of an LR range test's sweep against training, same model and batch.

  The sweep is the real one: `lr_range.find` over the image classifier's loss
  (`lr_range.sweep.image_loss_fn`, as `range_test` and the CLI run it), its evaluations left out
  (a range test's evaluations are counted in `sweep_cost`, not here). Each call of `find`
  traces and compiles its update once, so a round times sweeps of `steps` and 2 `steps`
  updates and takes the difference: the steady-state time of `steps` updates. Training is the
  loop of `superconv.train` (one packed step per call). Interleaved over `reps` rounds; medians.
  """
  from superconv import schedules  # pylint: disable=g-import-not-at-top
  from superconv.lr_range import core  # pylint: disable=g-import-not-at-top
  from superconv.lr_range import sweep  # pylint: disable=g-import-not-at-top
  lr_fn = schedules.lr_range(1e-3, 1e-2, steps)  # small LRs: nothing diverges mid-timing
  # The sweep checks that the optimizer used the sweep's LR: the optimizer follows lr_fn.
  model, tx, state, data, spec, mesh = _bench_setup(model_name, batch, dtype, lr=lr_fn)
  init = step_lib.pack(state)  # never donated: each timed loop starts from a fresh copy of it
  fresh = lambda: step_lib.pack(step_lib.unpack(init))
  fn = step_lib.make_train_fn(model, tx, mesh, spec, 1, packed=True).lower(init, data).compile()
  loss_fn = sweep.image_loss_fn(model, mesh, spec)

  # The training optimizer's update as a factory (`find` drives a top-level injected LR).
  factory = lambda lr: optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(lr, momentum=0.9))

  def run_sweep(n):
    t = time.perf_counter()
    core.find(loss_fn, state.params, factory,
              sweep._image_batches(lambda: data, state.key),  # pylint: disable=protected-access
              model_state=state.batch_stats, reading='loss', min_lr=1e-3, max_lr=1e-2,
              num_steps=n, mode='linear', eval_every_steps=n, diverge_factor=0.0)
    return time.perf_counter() - t
  jax.block_until_ready(fn(fresh(), data))  # warm-up
  run_sweep(steps)
  train_s, sweep_s = [], []
  for _ in range(reps):
    p = fresh()
    jax.block_until_ready(p)
    t = time.perf_counter()
    for _ in range(steps):
      p = fn(p, data)
    jax.block_until_ready(p)
    train_s.append(time.perf_counter() - t)
    sweep_s.append(run_sweep(2 * steps) - run_sweep(steps))
  train_ups = steps / float(np.median(train_s))
  # With few cheap updates the difference is within the two compiles' jitter and can come out
  # zero or negative: then the sweep's rate is not resolved (None), not a negative number.
  extra = float(np.median(sweep_s))
  sweep_ups = steps / extra if extra > 0 else None
  return {'model': model_name, 'batch': batch, 'dtype': dtype, 'steps': steps, 'reps': reps,
          'train_updates_per_sec': train_ups, 'sweep_updates_per_sec': sweep_ups,
          'sweep_over_train': sweep_ups / train_ups if sweep_ups else None,
          'train_seconds': train_s, 'sweep_seconds': sweep_s, 'devices': mesh.devices.size}


def bench_torch(model_name, batch, steps, dtype, compile_model):
  """The same model, batch and optimizer in PyTorch (eager or torch.compile)."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
  dev = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  model = torch_models.create(model_name).to(dev).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  shape = _image_shape(model_name)
  n = batch * 4
  images = torch.randint(0, 256, (n, shape[2], shape[0], shape[1]), dtype=torch.uint8, device=dev)
  labels = torch.randint(0, 10, (n,), device=dev)
  amp = dtype == 'bfloat16'

  def step(x, y):
    with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=amp):
      loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  fn = torch.compile(step) if compile_model else step
  sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)

  def batch_at(i):
    idx = torch.randint(0, n, (batch,), device=dev)
    x = (images[idx].float() - 127.0) / 64.0
    flip = torch.rand(batch, device=dev) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous(memory_format=torch.channels_last), labels[idx]

  t = time.perf_counter()
  for i in range(2):
    fn(*batch_at(i))
  sync()
  warm_s = time.perf_counter() - t
  t0 = time.perf_counter()
  for i in range(steps):
    fn(*batch_at(i))
  sync()
  step_s = (time.perf_counter() - t0) / steps
  out = {'framework': 'torch.compile' if compile_model else 'torch eager',
         'images_per_sec': batch / step_s, 'step_ms': step_s * 1e3, 'warmup_s': warm_s,
         'steps_timed': steps, 'torch': torch.__version__, 'threads': torch.get_num_threads()}
  if dev == 'cuda':
    out['peak_memory_gib'] = torch.cuda.max_memory_allocated() / 2**30
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--model', default='resnet56')
  p.add_argument('--batch', type=int, default=1000)
  p.add_argument('--steps', type=int, default=50, help='timed updates')
  p.add_argument('--steps-per-dispatch', type=int, default=0,
                 help='updates per jitted call (0: 1 on CPU, 10 elsewhere; see step_lib.dispatch_size)')
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  p.add_argument('--torch', default='eager,compile',
                 help="comma list of 'eager', 'compile'; '' skips PyTorch")
  p.add_argument('--torch-steps', type=int, default=0, help='timed PyTorch updates (0: --steps)')
  p.add_argument('--out', default='', help='append the results as one JSON object to this file')
  p.add_argument('--flops-only', action='store_true',
                 help='print the FLOPs of one update (from the unoptimised program) and exit')
  p.add_argument('--packed', action='store_true',
                 help='time the packed-state step (step.pack), as the training loop runs it')
  p.add_argument('--variant', default='', help='a name for this row (recorded in the results)')
  p.add_argument('--profile', default='',
                 help='folder: a jax.profiler trace of one dispatch and its kernel breakdown')
  p.add_argument('--dispatch', default='',
                 help="comma list of models: the host cost of one dispatch, pytree against packed "
                      "state, apart from the update time (bench_dispatch); --batch, --reps, --calls")
  p.add_argument('--range-test', default='',
                 help='comma list of models: updates/s of an LR range-test sweep against training '
                      '(bench_range_test); --batch, --steps, --reps')
  p.add_argument('--reps', type=int, default=5, help='interleaved rounds (--dispatch, --range-test)')
  p.add_argument('--calls', type=int, default=200, help='identity calls per round (--dispatch)')
  a = p.parse_args(argv)
  cmd = 'python -m benchmarks.throughput ' + ' '.join(argv if argv is not None else sys.argv[1:])
  if a.dispatch or a.range_test:
    return _dispatch_main(a, cmd)
  if a.flops_only:
    flops = step_flops(a.model, a.batch, a.dtype)
    print(f'{a.model} batch {a.batch}: {flops / 1e9:.1f} GFLOP per update '
          f'({flops / a.batch / 1e6:.0f} MFLOP per image)')
    out = {'command': 'python -m benchmarks.throughput ' + ' '.join(
        argv if argv is not None else sys.argv[1:]), 'model': a.model, 'batch': a.batch,
           'dtype': a.dtype, 'flops_per_step': flops, 'jax': jax.__version__}
    if a.out:
      with open(a.out, 'a') as f:
        f.write(json.dumps(out) + '\n')
    return out

  results = {'command': cmd, 'variant': a.variant, 'xla_flags': os.environ.get('XLA_FLAGS', ''),
             'model': a.model, 'batch': a.batch, 'dtype': a.dtype,
             **metrics_lib.provenance(), 'runs': []}
  k = a.steps_per_dispatch or (1 if jax.default_backend() == 'cpu' else 10)
  r = bench_jax(a.model, a.batch, a.steps, k, a.dtype, packed=a.packed, profile_dir=a.profile)
  results['runs'].append(r)
  print(f"jax      {r['images_per_sec']:10.1f} img/s  step {r['step_ms']:.2f} ms  compile "
        f"{r['compile_s']:.1f} s  host {r['host_overhead_ms_per_step']:.3f} ms/step  "
        f"{(r['achieved_tflops'] or 0):.2f} TFLOP/s"
        + (f" ({100 * r['fraction_of_peak']:.1f} % of peak)" if r['fraction_of_peak'] else '')
        + f"  mem {r['peak_memory_gib']:.2f} GiB", flush=True)
  modes = [m for m in a.torch.split(',') if m]
  if modes:
    try:
      import torch  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      print('PyTorch is not installed (pip install -e ".[bench]"): skipping the comparison.')
      modes = []
  for mode in modes:
    try:
      t = bench_torch(a.model, a.batch, a.torch_steps or a.steps, a.dtype, mode == 'compile')
    except Exception as e:  # pylint: disable=broad-except
      # torch.compile needs a working compiler tool chain; report instead of failing the run.
      t = {'framework': f'torch {mode}', 'error': f'{type(e).__name__}: {str(e)[:300]}'}
    results['runs'].append(t)
    if 'error' in t:
      print(f"{t['framework']}: failed ({t['error']})")
      continue
    t['jax_speedup'] = r['images_per_sec'] / t['images_per_sec']
    print(f"{t['framework']:13s} {t['images_per_sec']:10.1f} img/s  step {t['step_ms']:.2f} ms"
          f"  -> superconv is {t['jax_speedup']:.2f}x", flush=True)
  if a.out:
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, 'a') as f:
      f.write(json.dumps(results) + '\n')
  return results


def _dispatch_main(a, cmd):
  """--dispatch / --range-test: one JSON object (command, hardware, uptime, rows) to --out."""
  from benchmarks import machine  # pylint: disable=g-import-not-at-top
  out = {'command': cmd, 'hardware': machine.hardware(), 'backend': jax.default_backend(),
         'device_kind': jax.devices()[0].device_kind, 'xla_flags': os.environ.get('XLA_FLAGS', ''),
         'uptime_before': machine.uptime()}
  if a.dispatch:
    out['dispatch'] = []
    for m in a.dispatch.split(','):
      r = bench_dispatch(m, a.batch, a.calls, a.reps, a.dtype)
      out['dispatch'].append(r)
      print(f"{m} ({r['state_arrays']} arrays -> {r['packed_buffers']} buffers), batch {a.batch}: "
            f"identity {r['pytree']['identity_ms']:.3f} -> {r['packed']['identity_ms']:.3f} ms, "
            f"touch {r['pytree']['touch_ms']:.3f} -> {r['packed']['touch_ms']:.3f} ms, "
            f"step issue {r['pytree']['step_issue_ms']:.3f} -> {r['packed']['step_issue_ms']:.3f}"
            f" ms (fastest {r['pytree']['step_issue_min_ms']:.3f} -> "
            f"{r['packed']['step_issue_min_ms']:.3f}), update {r['pytree']['update_ms']:.1f} / {r['packed']['update_ms']:.1f} ms",
            flush=True)
  if a.range_test:
    out['range_test'] = []
    for m in a.range_test.split(','):
      r = bench_range_test(m, a.batch, a.steps, a.reps, a.dtype)
      out['range_test'].append(r)
      sweep = ('not resolved (raise --steps: the extra updates were within compile jitter)'
               if r['sweep_updates_per_sec'] is None else
               f"{r['sweep_updates_per_sec']:.2f} updates/s ({r['sweep_over_train']:.3f}x)")
      print(f"{m} batch {a.batch}: training {r['train_updates_per_sec']:.2f} updates/s, "
            f'sweep {sweep}', flush=True)
  out['uptime_after'] = machine.uptime()
  if a.out:
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, 'w' if a.out.endswith('.json') else 'a') as f:
      f.write(json.dumps(out, indent=1 if a.out.endswith('.json') else None) + '\n')
  return out


if __name__ == '__main__':
  main()
