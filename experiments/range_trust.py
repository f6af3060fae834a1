"""How good is the range test's answer? The runs of `experiments/range_trust_cpu.sh`, reported.

  python -m experiments.range_trust [--readme README.md]

Reads `experiments/results/lenet_fashion_mnist/`: the range test (3 repeats, read on a held-out
validation split), the 1cycle run fed its median suggestion, and the same 1cycle run at each peak
LR of a grid. Writes `experiments/results/range_trust.json` (every number below), the plot
`experiments/results/range_trust.png` (final test accuracy against peak LR, seeds as points, the
suggestion marked) and, with `--readme`, the README block between `<!-- range-trust:start -->` and
`<!-- range-trust:end -->`. Runs are found by what they ran (run.json: their `--set`s), so a rerun
of part of the protocol updates the report.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Sequence

from experiments.superconvergence import seed_stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'experiments', 'results')
START, END = '<!-- range-trust:start -->', '<!-- range-trust:end -->'
ARGS = 'policy=1cycle,epochs=4'


def _runs(root: str):
  """(sets, summary, run_dir) of every finished LeNet seed of the protocol's config argument."""
  for path in sorted(glob.glob(os.path.join(root, 'lenet_fashion_mnist', '*', 'seed*',
                                            'run.json'))):
    run = json.load(open(path))
    summary_path = os.path.join(os.path.dirname(path), 'summary.json')
    if run.get('args') != ARGS or not os.path.exists(summary_path):
      continue
    sets = dict(s.split('=', 1) for s in run.get('sets', []))
    yield sets, json.load(open(summary_path)), os.path.dirname(path)


def _accuracy(summary: dict) -> float:
  """Final test accuracy; a diverged run counts as chance (0.1) and is flagged separately."""
  if summary.get('diverged'):
    return 0.1
  return float(summary['final_eval_accuracy'])


def report(root: str = RESULTS) -> dict:
  sweep, suggested, grid = None, [], {}
  for sets, summary, run_dir in _runs(root):
    if sets.get('mode') == 'lr_range':
      sweep = json.load(open(os.path.join(run_dir, 'lr_range.json')))
    elif sets.get('lr_range_result', '').endswith('range_trust_lr_range.json'):
      suggested.append(summary)
    elif 'schedule.max_lr' in sets and 'lr_range_result' not in sets:
      grid.setdefault(float(sets['schedule.max_lr']), []).append(summary)
  out: dict = {'protocol': 'experiments/range_trust_cpu.sh', 'config': f'configs/'
               f'lenet_fashion_mnist.py:{ARGS}', 'grid': {}, 'suggested': None, 'sweep': None}
  if sweep:
    s = sweep['suggestion']
    out['sweep'] = {'max_lr': s['max_lr'], 'min_lr_1cycle': s['min_lr_1cycle'],
                    'method': s['method'], 'reliable': s['reliable'], 'spread': sweep['spread'],
                    'cost_fraction': sweep['cost'].get('fraction'),
                    'eval_split': sweep['settings']['eval_split'],
                    'eval_examples': sweep['settings']['eval_examples'],
                    'num_steps': sweep['settings']['num_steps'],
                    'sweep_lr': [sweep['settings']['min_lr'], sweep['settings']['max_lr']],
                    'wall_seconds': sweep['wall_seconds']}
  for peak, summaries in sorted(grid.items()):
    out['grid'][f'{peak:g}'] = {**seed_stats([_accuracy(x) for x in summaries]),
                                'diverged': sum(bool(x.get('diverged')) for x in summaries)}
  if suggested:
    out['suggested'] = {**seed_stats([_accuracy(x) for x in suggested]),
                        'diverged': sum(bool(x.get('diverged')) for x in suggested)}
  means = {p: g['mean'] for p, g in out['grid'].items() if g['n']}
  if means and out['suggested']:
    best = max(means, key=means.get)
    out['grid_best'] = {'peak': float(best), 'mean': means[best]}
    out['gap_points'] = 100 * (means[best] - out['suggested']['mean'])
  hardware = [x.get('host_cpu') for _, x, _ in _runs(root)]
  out['hardware'] = next((h for h in hardware if h), None)
  return out


def _pm(s: dict) -> str:
  if not s or not s.get('n'):
    return '—'
  return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} (n={s['n']})"


def markdown(r: dict) -> str:
  lines = []
  sw = r.get('sweep')
  if sw:
    sp = sw['spread']
    lines.append(
        f"LeNet on real Fashion-MNIST, the paper's 1cycle at TBS 512 over 4 epochs "
        f"(`{r['config']}`). The range test of that run, 3 repeats with different data orders, "
        f"LR {sw['sweep_lr'][0]:g} → {sw['sweep_lr'][1]:g} over {sw['num_steps']} updates, read "
        f"on {sw['eval_examples']} {sw['eval_split']} images held out of training, suggested "
        f"max_lr **{sw['max_lr']:.3g}** (median of the readings "
        f"{', '.join(f'{x:.3g}' for x in sp['max_lr'])}; {sp['unreliable']} unreliable); its compute was **{100 * sw['cost_fraction']:.1f} %** "
        f"of the run's.")
  lines += ['', '| peak LR (base = peak / 10) | final test accuracy % | diverged |', '|---|---|---|']
  for peak, g in r['grid'].items():
    lines.append(f'| {peak} | {_pm(g)} | {g["diverged"]} of {g["n"]} |')
  if r.get('suggested') and sw:
    lines.append(f"| **{sw['max_lr']:.3g} (suggested)** | {_pm(r['suggested'])} | "
                 f"{r['suggested']['diverged']} of {r['suggested']['n']} |")
  if 'gap_points' in r:
    best = r['grid_best']
    lines += ['', f"The suggested run is **{r['gap_points']:.2f} points** below the grid's best "
              f"(peak {best['peak']:g}, {100 * best['mean']:.2f} %); target: within 0.5 points, "
              f"no divergence, at most 10 % of the run's compute."]
  lines += ['', f"From `experiments/results/range_trust.json` (`bash experiments/range_trust_cpu.sh`, "
            f"then `python -m experiments.range_trust --readme README.md`), on "
            f"{r.get('hardware') or 'this CPU'}. Plot: `experiments/results/range_trust.png`.", '']
  return '\n'.join(lines)


def plot(r: dict, path: str) -> None:
  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  # pylint: enable=g-import-not-at-top
  fig = Figure(figsize=(6, 4), layout='constrained')
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  peaks = sorted(r['grid'], key=float)
  ok = [p for p in peaks if not r['grid'][p]['diverged']]
  finite = [100 * v for p in ok for v in r['grid'][p]['values']]
  if r.get('suggested'):
    finite += [100 * v for v in r['suggested']['values']]
  floor = min(finite) - 2 if finite else 0
  for p in ok:
    vals = r['grid'][p]['values']
    ax.plot([float(p)] * len(vals), [100 * v for v in vals], 'o', color='C0', alpha=0.7)
  if ok:
    ax.plot([float(p) for p in ok], [100 * r['grid'][p]['mean'] for p in ok], '-',
            color='C0', label='grid (mean of seeds)')
  gone = [p for p in peaks if r['grid'][p]['diverged']]
  if gone:  # drawn on the floor of the axis: a diverged run has no accuracy to speak of
    ax.plot([float(p) for p in gone], [floor + 0.3] * len(gone), 'x', ms=10, color='k',
            label='diverged')
  ax.set_ylim(bottom=floor)
  if r.get('suggested') and r.get('sweep'):
    x = r['sweep']['max_lr']
    ax.plot([x] * r['suggested']['n'], [100 * v for v in r['suggested']['values']], '*',
            ms=12, color='C3', label=f'suggested max_lr {x:.3g}')
    sp = r['sweep']['spread']
    ax.axvspan(sp['max_lr_min'], sp['max_lr_max'], color='C3', alpha=0.1,
               label='spread of the reliable readings')
  ax.set_xscale('log')
  ax.set_xticks([float(p) for p in peaks], labels=peaks)
  ax.minorticks_off()
  ax.set_xlabel('peak LR of the 1cycle (base = peak / 10)')
  ax.set_ylabel('final test accuracy (%)')
  ax.set_title('LeNet / Fashion-MNIST, 4 epochs: the range test against a grid')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m experiments.range_trust', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--results', default=RESULTS)
  parser.add_argument('--readme', default='')
  ns = parser.parse_args(argv)
  r = report(ns.results)
  with open(os.path.join(ns.results, 'range_trust.json'), 'w') as f:
    json.dump(r, f, indent=2, sort_keys=True)
    f.write('\n')
  if r['grid'] or r.get('suggested'):
    plot(r, os.path.join(ns.results, 'range_trust.png'))
  text = markdown(r)
  print(text)
  if ns.readme:
    readme = open(ns.readme).read()
    if START not in readme or END not in readme:
      raise SystemExit(f'{ns.readme} has no {START} ... {END} block')
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    with open(ns.readme, 'w') as f:
      f.write(f'{before}{START}\n{text}{END}{after}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
