r"""The benchmark tables of docs/performance.md, regenerated from the committed results.

  python -m benchmarks.tables            # print them
  python -m benchmarks.tables --write    # rewrite their blocks in docs/performance.md

Each table is a generated block (`experiments.collect.write_block`) and comes from one file of
`benchmarks/results/` (the command that made it is in the file):

  perf-dispatch  dispatch_cpu.json       python -m benchmarks.throughput --dispatch ...
  perf-cpu       cpu_2core.jsonl         python -m benchmarks.throughput --torch eager,compile ...
  compile-cache  compile_cache_cpu.json  python -m benchmarks.compile_cache
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from benchmarks import compile_cache
from experiments import collect

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
DOC = os.path.join(collect.DOCS, 'performance.md')


def _load(name: str) -> dict:
  with open(os.path.join(RESULTS, name)) as f:
    return json.load(f)


def _source(d: dict, name: str) -> str:
  load = d.get('uptime_before', '').split('load average:')[-1].strip()
  return (f"\n`benchmarks/results/{name}`, `{d['command'].strip()}`, on {d['hardware']['cpu']} "
          f"({d['hardware']['cores']} cores), load average {load} before.\n")


def dispatch_table(d: dict) -> str:
  """Host cost of one dispatch, pytree (before) against packed (after), per model."""
  rows = ['| | ' + ' | '.join(f"{r['model']} ({r['state_arrays']} arrays -> "
                                 f"{r['packed_buffers']})" for r in d['dispatch']) + ' |',
          '|---|' + '---|' * len(d['dispatch'])]
  cells = (('jitted identity, per call (ms)', 'identity_ms', '{:.3g}'),
           ('jitted `step + 1`, per call (ms)', 'touch_ms', '{:.3g}'),
           ('real step, return of the call, fastest (ms)', 'step_issue_min_ms', '{:.3g}'),
           ('real step, return of the call, median (ms)', 'step_issue_ms', '{:.3g}'),
           ('the update itself (ms)', 'update_ms', '{:.0f}'),
           ('compile (s)', 'compile_s', '{:.1f}'))
  for label, key, fmt in cells:
    rows.append(f'| {label} | ' + ' | '.join(
        f"{fmt.format(r['pytree'][key])} -> {fmt.format(r['packed'][key])}"
        for r in d['dispatch']) + ' |')
  return '\n'.join(rows) + '\n'


# Issue 17's CPU goal: superconv's step at no less than this fraction of PyTorch eager's speed.
EAGER_GOAL = 0.5


def cpu_table(records: list[dict]) -> str:
  """superconv's train step against PyTorch eager and torch.compile, one row per record."""
  rows = ['| model, batch | superconv | PyTorch eager | `torch.compile` | superconv / eager |',
          '|---|---|---|---|---|']
  ratios = []
  for r in records:
    by = {x['framework']: x['images_per_sec'] for x in r['runs']}
    jax_ips, eager = by['jax (superconv train step)'], by.get('torch eager')
    compiled = by.get('torch.compile')
    ratio = jax_ips / eager if eager else None
    ratios.append(ratio)
    cell = lambda v: f'{v:,.1f} img/s' if v else '—'
    rows.append(f"| {r['model']}, {r['batch']} | {cell(jax_ips)} | {cell(eager)} | "
                f"{cell(compiled)} | " + (f'**{ratio:.2f}x** |' if ratio else '— |'))
  met = all(x is not None and x >= EAGER_GOAL for x in ratios)
  first = records[0]
  torch = next((x.get('torch') for x in first['runs'] if x['framework'] == 'torch eager'), '?')
  return ('\n'.join(rows) + '\n\n'
          f"The goal of at least {EAGER_GOAL:g}x PyTorch eager is "
          f"**{'met' if met else 'not met'}** "
          f"on this CPU ({first['host_cpu']}, JAX {first['jax']}, PyTorch "
          f"{torch}; `benchmarks/results/cpu_2core.jsonl`, each model "
          'in one run on an idle machine: '
          + '; '.join(f"`{r['command']}`" for r in records) + ').\n')


def blocks() -> dict[str, str]:
  dispatch = _load('dispatch_cpu.json')
  with open(os.path.join(RESULTS, 'cpu_2core.jsonl')) as f:
    cpu = [json.loads(line) for line in f if line.strip()]
  return {
      'perf-cpu': cpu_table(cpu),
      'perf-dispatch': dispatch_table(dispatch) + _source(dispatch, 'dispatch_cpu.json'),
      'compile-cache': compile_cache.markdown(
          _load('compile_cache_cpu.json'), os.path.join(RESULTS, 'compile_cache_cpu.json')),
  }


def main(argv: Sequence[str] | None = None) -> int:
  return collect.blocks_main('python -m benchmarks.tables', __doc__.split('\n')[0], DOC, blocks,
                             argv)


if __name__ == '__main__':
  raise SystemExit(main())
