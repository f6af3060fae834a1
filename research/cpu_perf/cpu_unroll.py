r"""The trainer on the CPU with k updates per call (an unrolled `lax.scan`) against one per call.

  python -m research.cpu_perf.cpu_unroll --cifar /path/to/cifar10-jpeg.tar.gz \
      [--steps 96] [--ks 1 4] [--reps 2] [--out FILE]

Each run is a fresh `python -m superconv.main` of a real config (LeNet / Fashion-MNIST 1cycle at
batch 512; ResNet-20 / CIFAR-10 1cycle at batch 64), `--steps` updates with one evaluation at
the end, `cpu_steps_per_dispatch=k` and `cpu_unroll_min_steps=0` (so the short run unrolls as a
long one would), the compilation cache off. The runs of one model alternate between the ks
(k1, k4, k1, k4, ...), so a change in the machine's load falls on every k alike. Figures: the
training images/s and the compile seconds each run's summary.json reports. Written to
results/cpu_unroll_cpu.json (beside this file) with the hardware and the load before and after;
the table in docs/performance.md comes from that file (`python -m research.cpu_perf.tables
--write`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from benchmarks import machine

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, 'results')

# name -> (config with argument, the sets that make it a benchmark run)
MODELS = {
    'lenet, 512': ('configs/lenet_fashion_mnist.py:policy=1cycle', ()),
    'resnet20, 64': ('configs/resnet20.py:policy=1cycle,data={cifar}',
                     ('batch_size=64', 'model.virtual_batch_size=0')),
    'tiny': ('configs/resnet56.py:tiny', ()),  # the test's: seconds, synthetic data
}


def _run(config: str, sets: tuple[str, ...], steps: int, k: int, workdir: str) -> dict:
  # The schedule's cycle shrunk to the run (0.45 of it up, as the configs' 1cycle).
  flags = [f'--config.{s}' for s in (*sets, f'num_steps={steps}', f'eval_every_steps={steps}',
                                      f'schedule.step_size={max(1, int(0.45 * steps))}',
                                      f'log_every_steps={steps}', 'checkpoint_every_steps=0',
                                      f'cpu_steps_per_dispatch={k}', 'cpu_unroll_min_steps=0',
                                      'progress_bar=False', 'compilation_cache_dir=')]
  cmd = [sys.executable, '-m', 'superconv.main', f'--config={config}', f'--workdir={workdir}',
         *flags]
  env = {k_: v for k_, v in os.environ.items() if not k_.startswith('JAX_COMPILATION_CACHE')}
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  if done.returncode:
    raise SystemExit(f'{" ".join(cmd)} failed:\n{done.stderr[-3000:]}')
  s = json.load(open(os.path.join(workdir, 'summary.json')))
  return {'images_per_sec': s['images_per_sec'], 'compile_seconds': s['compile_seconds'],
          'steps': s['steps'], 'host_cpu': s.get('host_cpu')}


def measure(models: list[str], ks: list[int], steps: int, reps: int, cifar: str) -> dict:
  out = {}
  for name in models:
    config, sets = MODELS[name]
    config = config.format(cifar=cifar) if cifar else config.replace(',data={cifar}', '')  # TFDS
    runs = {k: [] for k in ks}
    with tempfile.TemporaryDirectory() as tmp:
      for rep in range(reps):
        for k in ks:
          r = _run(config, sets, steps, k, os.path.join(tmp, f'k{k}_{rep}'))
          runs[k].append(r)
          print(f'{name} k={k} rep {rep}: {r["images_per_sec"]:.1f} img/s, compile '
                f'{r["compile_seconds"]:.1f} s', flush=True)
    out[name] = {'config': config, 'sets': list(sets), 'steps': steps,
                 'by_k': summarize({str(k): rs for k, rs in runs.items()}),
                 'host_cpu': runs[ks[0]][0]['host_cpu']}
  return out


def summarize(runs: dict[str, list[dict]]) -> dict:
  """Per k: every run's figures, and the fastest run's (the least disturbed by other load on a
  shared machine) with its ratio to the first k's fastest; compile s is the median."""
  best = {k: max(r['images_per_sec'] for r in rs) for k, rs in runs.items()}
  first = next(iter(best.values()))
  return {k: {'images_per_sec': [r['images_per_sec'] for r in rs],
              'compile_seconds': [r['compile_seconds'] for r in rs],
              'best_images_per_sec': best[k], 'speedup_vs_first_k': best[k] / first,
              'median_compile_seconds': statistics.median(r['compile_seconds'] for r in rs)}
          for k, rs in runs.items()}


def markdown(result: dict, path: str) -> str:
  lines = ['| model, batch | updates per call | images/s (fastest run) | vs 1 per call | compile s (median) |',
           '|---|---|---|---|---|']
  for name, m in result['models'].items():
    for k, r in m['by_k'].items():
      lines.append(f"| {name} | {k} | {r['best_images_per_sec']:.1f} | "
                   f"{r['speedup_vs_first_k']:.2f}x | {r['median_compile_seconds']:.1f} |")
  host = next(iter(result['models'].values()))['host_cpu']
  lines += ['', f"{result['reps']} runs of {result['steps']} updates per row, alternating; on "
            f"{host or 'this CPU'}; load before: {result['uptime_before'].split('load average:')[-1].strip()}"
            f", after: {result['uptime_after'].split('load average:')[-1].strip()}. From "
            f"`{os.path.relpath(path, ROOT)}` (`{result['command']}`)."]
  if result.get('note'):
    lines[-1] += f" Note: {result['note']}."
  lines.append('')
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog='python -m research.cpu_perf.cpu_unroll', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--models', nargs='+', default=['lenet, 512', 'resnet20, 64'],
                 choices=list(MODELS))
  p.add_argument('--ks', type=int, nargs='+', default=[1, 4])
  p.add_argument('--steps', type=int, default=96, help='updates per run (a multiple of every k)')
  p.add_argument('--reps', type=int, default=2)
  p.add_argument('--cifar', default='', help="the CIFAR-10 file ResNet-20 reads ('': TFDS)")
  p.add_argument('--out', default=os.path.join(RESULTS, 'cpu_unroll_cpu.json'))
  a = p.parse_args(argv)
  bad = [k for k in a.ks if k < 1 or a.steps % k]
  if bad:
    p.error(f'--steps {a.steps} is not a multiple of k={bad[0]} (every k must divide it, k >= 1)')
  command = 'python -m research.cpu_perf.cpu_unroll ' + ' '.join(
      argv if argv is not None else sys.argv[1:])
  before = machine.uptime()
  models = measure(a.models, a.ks, a.steps, a.reps, a.cifar)
  result = {'command': command.strip(), 'steps': a.steps, 'reps': a.reps, 'ks': a.ks,
            'uptime_before': before, 'uptime_after': machine.uptime(), 'python': platform.python_version(),
            'xla_flags': os.environ.get('XLA_FLAGS', ''), 'models': models}
  os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
  with open(a.out, 'w') as f:
    json.dump(result, f, indent=1)
    f.write('\n')
  print(markdown(result, a.out))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
