r"""What the persistent compilation cache saves: compile time of a first, a second identical and
a second-seed run, and of a run with the cache off, each a fresh `python -m superconv.main`.

  python -m benchmarks.compile_cache [--config configs/resnet56.py:smoke] [--out FILE]

Each run gets its own workdir; the cache folder is fresh at the start, so the first run is cold.
The figures are each run's `compile_seconds` (train and eval steps, from summary.json) and its
wall time. Written to benchmarks/results/compile_cache_<platform>.json with the hardware;
docs/performance.md's table comes from that file (`python -m benchmarks.tables --write`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _run(config: str, workdir: str, cache: str, *extra: str) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}
  cmd = [sys.executable, '-m', 'superconv.main', f'--config={config}', f'--workdir={workdir}',
         '--config.progress_bar=False', f'--config.compilation_cache_dir={cache}', *extra]
  t = time.perf_counter()
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t
  if done.returncode:
    raise SystemExit(f'{" ".join(cmd)} failed:\n{done.stderr[-3000:]}')
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  return {'compile_seconds': summary['compile_seconds'], 'process_wall_seconds': wall,
          'extra': list(extra), 'provenance': {k: summary[k] for k in ('host_cpu', 'devices',
                                                                       'jax', 'git_commit')
                                                if k in summary}}


def markdown(result: dict, path: str) -> str:
  """The docs block: each run's compile seconds, from a results file."""
  rows = result['runs']
  first = rows['first (cold cache)']
  lines = ['| run | compile s (train + eval steps) | process wall s |', '|---|---|---|']
  for name, r in rows.items():
    lines.append(f"| {name} | {r['compile_seconds']:.1f} | {r['process_wall_seconds']:.1f} |")
  lines += ['', f"`{result['config']}` on {first['provenance'].get('host_cpu', 'this CPU')} "
            f"(load average {' '.join(result['uptime'] or [])}), from `{os.path.relpath(path, ROOT)}` "
            f"(`{result['command'].strip()}`).", '']
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default='configs/resnet56.py:smoke')
  p.add_argument('--out', default='')
  ns = p.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, 'cache')
    rows = {
        'first (cold cache)': _run(ns.config, os.path.join(tmp, 'a'), cache),
        'second, identical': _run(ns.config, os.path.join(tmp, 'b'), cache),
        'second seed': _run(ns.config, os.path.join(tmp, 'c'), cache, '--config.seed=1'),
        'cache off': _run(ns.config, os.path.join(tmp, 'd'), ''),
    }
    entries = len(os.listdir(cache)) if os.path.isdir(cache) else 0
  out = {'config': ns.config, 'runs': rows, 'cache_entries': entries,
         'command': 'python -m benchmarks.compile_cache ' + ' '.join(argv or sys.argv[1:]),
         'uptime': open('/proc/loadavg').read().split()[:3] if os.path.exists('/proc/loadavg')
         else None}
  platform = rows['first (cold cache)']['provenance'].get('devices', 'cpu').split(' x ')[-1]
  path = ns.out or os.path.join(HERE, 'results', f'compile_cache_{platform.lower()}.json')
  with open(path, 'w') as f:
    json.dump(out, f, indent=2)
    f.write('\n')
  print(f'{"run":<20} compile s   process wall s')
  for name, r in rows.items():
    print(f'{name:<20} {r["compile_seconds"]:9.2f}   {r["process_wall_seconds"]:9.2f}')
  print(f'{entries} cache entries; written to {path}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
