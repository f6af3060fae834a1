r"""Does the range test's reading set a good 1cycle peak for a model superconv does not own?

The byte-level transformer of `lm_range_test` (AdamW, the standard library's source): the range
test (3 repeats, read on held-out loss) fed into a 1cycle run (`result.schedules`), against the
same 1cycle at each peak LR of a grid spanning more than 10x, 2 seeds each. Writes, under
`--out` (research/lm_range/results), one folder per arm and seed (run.json, summary.json,
metrics.jsonl; the sweep's lr_range.json and .png), manifest.json, report.json and study.png.

  nice -n 10 python examples/lm_study.py --out research/lm_range/results
  python examples/lm_study.py --toy --out /tmp/lm_study        # seconds: what the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

if __package__ in (None, ''):  # run as a script: the repository root is the import root
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples import lm_range_test as lm  # noqa: E402
from superconv import metrics as metrics_lib  # noqa: E402
from superconv import schedules  # noqa: E402

STUDY = {
    'size': lm.Size(dim=48, layers=2, heads=4, length=64, batch=16), 'steps': 3000,
    'sweep': dict(num_steps=60, eval_every=4, eval_batches=4, min_lr=1e-4, max_lr=10.0),
    'repeats': 3, 'grid': (4.6e-3, 1e-2, 2.2e-2, 4.6e-2, 1e-1), 'seeds': (0, 1),
    'final_eval_batches': 32, 'max_bytes': None,
}
TOY = {
    'size': lm.Size(dim=16, layers=1, heads=2, length=16, batch=8), 'steps': 40,
    'sweep': dict(num_steps=24, eval_every=3, eval_batches=2, min_lr=1e-4, max_lr=10.0),
    'repeats': 2, 'grid': (1e-3, 1e-2), 'seeds': (0,), 'final_eval_batches': 2,
    'max_bytes': 20_000,
}
QUESTION = (
    'Does the LR range test, run on a training superconv does not own (a byte-level transformer '
    'language model trained with AdamW on the Python standard library source, read on held-out '
    'loss, 3 repeats), set a 1cycle peak LR whose held-out loss is inside the seed spread of the '
    "best peak of a grid spanning more than 10x, without divergence, at under 10 % of the run's "
    'compute?')


def _write_run(folder: str, run: dict, command: str, arm: dict) -> None:
  os.makedirs(folder, exist_ok=True)
  writer = metrics_lib.MetricWriter(os.path.join(folder, 'metrics.jsonl'))
  for row in run['rows']:
    writer.write(row)
  writer.close()
  metrics_lib.write_json(os.path.join(folder, 'summary.json'), {
      k: v for k, v in run.items() if k != 'rows'} | metrics_lib.provenance())
  metrics_lib.write_json(os.path.join(folder, 'run.json'), {'command': command, **arm})


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--toy', action='store_true')
  a = parser.parse_args(argv)
  p = TOY if a.toy else STUDY
  command = 'nice -n 10 python examples/lm_study.py --out research/lm_range/results'
  size, steps, mb = p['size'], p['steps'], p['max_bytes']
  arms = {}

  # The sweep, then the run it configures (two lines: schedules, train).
  c0 = time.process_time()
  result = lm.sweep(size, repeats=p['repeats'], run_steps=steps, max_bytes=mb, **p['sweep'])
  sweep_cpu = time.process_time() - c0
  folder = os.path.join(a.out, 'sweep', 'seed0')
  os.makedirs(folder, exist_ok=True)
  result.save(folder)
  result.save_run_files(folder)
  arms['sweep'] = {'config': 'examples/lm_study.py', 'args': 'sweep', 'set': [], 'seeds': [0]}
  metrics_lib.write_json(os.path.join(folder, 'run.json'), {
      'command': command, 'cpu_seconds': sweep_cpu, **arms['sweep']})
  runs = {}
  lr_fn, b1_fn = result.schedules('one_cycle', steps)
  arms['fed'] = {'config': 'examples/lm_study.py', 'args': f'fed max_lr={result.max_lr:.4g}',
                 'set': [], 'seeds': list(p['seeds'])}
  for seed in p['seeds']:
    run = lm.train(size, lr_fn, b1_fn, steps=steps, seed=seed, max_bytes=mb,
                   eval_batches=p['final_eval_batches'], log_every=max(1, steps // 30))
    runs[('fed', seed)] = run
    _write_run(os.path.join(a.out, 'fed', f'seed{seed}'), run, command, arms['fed'])
  # The grid: the same 1cycle (div_factor 10, b1 0.9) at each peak.
  for peak in p['grid']:
    arm = f'peak{peak:g}'
    arms[arm] = {'config': 'examples/lm_study.py', 'args': f'grid max_lr={peak:g}', 'set': [],
                 'seeds': list(p['seeds'])}
    for seed in p['seeds']:
      run = lm.train(size, schedules.one_cycle(steps, peak, div_factor=10.0),
                     schedules.constant(0.9), steps=steps, seed=seed, max_bytes=mb,
                     eval_batches=p['final_eval_batches'], log_every=max(1, steps // 30))
      runs[(arm, seed)] = run
      _write_run(os.path.join(a.out, arm, f'seed{seed}'), run, command, arms[arm])

  loss = lambda arm: np.asarray([runs[(arm, s)]['held_out_loss'] for s in p['seeds']])
  grid = {peak: loss(f'peak{peak:g}') for peak in p['grid']}
  finite = {k: v for k, v in grid.items() if np.all(np.isfinite(v))}
  best = min(finite, key=lambda k: finite[k].mean())
  fed = loss('fed')
  run_cpu = np.mean([r['cpu_seconds'] for r in runs.values()])
  report = {
      'suggested_max_lr': result.max_lr, 'suggestion': result.suggestion['method'],
      'sweep_spread': result.spread, 'fed_held_out_loss': fed.tolist(),
      'fed_mean': float(fed.mean()), 'grid': {f'{k:g}': v.tolist() for k, v in grid.items()},
      'grid_best_peak': best, 'grid_best_mean': float(grid[best].mean()),
      'grid_best_spread': [float(grid[best].min()), float(grid[best].max())],
      'fed_minus_best': float(fed.mean() - grid[best].mean()),
      # Inside the best peak's seed spread, or better than its worse seed.
      'fed_within_best_spread': bool(fed.mean() <= grid[best].max()),
      'diverged': sorted({arm for (arm, _), r in runs.items() if r['diverged']}),
      'sweep_cost_fraction_counted': result.cost.get('fraction'),
      'sweep_cpu_seconds': sweep_cpu, 'run_cpu_seconds_mean': float(run_cpu),
      'sweep_cpu_fraction_of_a_run': float(sweep_cpu / run_cpu),
      'total_cpu_seconds': float(sweep_cpu + sum(r['cpu_seconds'] for r in runs.values())),
      'command': command}
  metrics_lib.write_json(os.path.join(a.out, 'report.json'), report)
  metrics_lib.write_json(os.path.join(a.out, 'manifest.json'), {
      'study': 'lm_range', 'question': QUESTION, 'command': command, 'arms': arms})
  _plot(os.path.join(a.out, 'study.png'), grid, fed, result, steps)
  print(json.dumps({k: v for k, v in report.items() if k != 'sweep_spread'}, indent=1))
  return report


def _plot(path, grid, fed, result, steps):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(6, 4), layout='constrained')
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  peaks = sorted(grid)
  ax.plot(peaks, [grid[k].mean() for k in peaks], 'o-', color='C0', label='grid (mean)')
  for k in peaks:
    ax.plot([k] * len(grid[k]), grid[k], '.', color='C0', alpha=0.5)
  ax.plot([result.max_lr] * len(fed), fed, '*', ms=12, color='C3',
          label=f'fed by the range test ({result.max_lr:.3g})')
  ax.set_xscale('log')
  ax.set_xlabel('1cycle peak LR (AdamW)')
  ax.set_ylabel('held-out loss (nats per byte)')
  ax.set_title(f'Byte-level LM, {steps} updates: range test vs grid')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.savefig(path, dpi=120)


if __name__ == '__main__':
  main()
