r"""Throughput of superconv's real train step, side by side with PyTorch, in one process run.

  python -m benchmarks.throughput --model resnet56 --batch 1000 --steps 50
  python -m benchmarks.throughput --model lenet --batch 512 --steps 40 --out benchmarks/results/cpu.json

For the JAX step it prints images/s, step time, compile time (kept out of the timings), host
overhead per step (time Python spends issuing a dispatch, divided by the updates in it), achieved
FLOP/s from XLA's cost analysis and its fraction of the device's peak, and peak memory. If PyTorch
imports, the same model, batch and optimizer (SGD, momentum 0.9, weight decay 1e-4) run in eager
mode and under `torch.compile`, and the ratios are printed. Data lives on the device for both, so
the comparison is of the training step itself.
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

from superconv import step as step_lib
from superconv import sharding
from superconv import metrics as metrics_lib
from superconv import models
from superconv import train

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


def bench_jax(model_name, batch, steps, steps_per_dispatch, dtype, num_classes=10):
  """Times superconv's train step (shard_map over all devices, lax.scan, donation)."""
  mesh = sharding.make_mesh()
  model = models.create_model(model_name, num_classes=num_classes, dtype=dtype)
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
  tx = optax.chain(optax.add_decayed_weights(1e-4), tx)
  shape = _image_shape(model_name)
  rng = np.random.default_rng(0)
  n = batch * 4
  data = sharding.replicate({
      'images': rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
      'labels': rng.integers(0, num_classes, size=(n,)).astype(np.int32),
      'mean': np.full(shape, 127.0, np.float32)}, mesh)
  spec = step_lib.StepSpec(batch_size=batch, mirror=True, crop_padding=0, scale=1 / 64,
                         dtype=jnp.dtype(dtype))
  state = step_lib.create_train_state(model, tx, jax.random.PRNGKey(0), shape, mesh)
  t = time.perf_counter()
  compiled = step_lib.make_train_fn(model, tx, mesh, spec, steps_per_dispatch).lower(
      state, data).compile()
  compile_s = time.perf_counter() - t
  # FLOPs of ONE update from the unoptimised program: backend-independent (on GPU the compiled
  # program's convolutions are library calls that XLA's cost analysis does not count, and a
  # while loop's body is counted once whatever its trip count).
  cost = step_lib.make_train_fn(model, tx, mesh, spec, 1).lower(state, data).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops_per_step = float((cost or {}).get('flops', 0.0))

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
      'steps_timed': done, 'devices': jax.device_count(),
  }


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
  p.add_argument('--convs', action='store_true',
                 help='the per-convolution CPU table instead (python -m benchmarks.convs)')
  a = p.parse_args(argv)
  if a.convs:
    from benchmarks import convs  # pylint: disable=g-import-not-at-top
    return convs.main([], command='python -m benchmarks.throughput --convs')
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

  cmd = 'python -m benchmarks.throughput ' + ' '.join(argv if argv is not None else sys.argv[1:])
  results = {'command': cmd, 'model': a.model, 'batch': a.batch, 'dtype': a.dtype,
             **metrics_lib.provenance(), 'runs': []}
  k = a.steps_per_dispatch or (1 if jax.default_backend() == 'cpu' else 10)
  r = bench_jax(a.model, a.batch, a.steps, k, a.dtype)
  results['runs'].append(r)
  print(f"jax      {r['images_per_sec']:10.1f} img/s  step {r['step_ms']:.2f} ms  compile "
        f"{r['compile_s']:.1f} s  host {r['host_overhead_ms_per_step']:.3f} ms/step  "
        f"{(r['achieved_tflops'] or 0):.2f} TFLOP/s"
        + (f" ({100 * r['fraction_of_peak']:.1f} % of peak)" if r['fraction_of_peak'] else '')
        + f"  mem {r['peak_memory_gib']:.2f} GiB", flush=True)
  modes = [m for m in a.torch.split(',') if m]
  if modes:
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
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


if __name__ == '__main__':
  main()
