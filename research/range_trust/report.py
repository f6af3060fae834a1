"""How good is the range test's answer? The runs of `research/range_trust/run_cpu.sh`, reported.

  python -m research.range_trust.report [--write]

For each protocol of that script (LeNet / Fashion-MNIST at 4 and at 12 epochs; ResNet-20 / a
CIFAR-10 subset): the range test (3 repeats, read on a split held out of training), the 1cycle
run fed its median suggestion, and the same 1cycle run at each peak LR of a grid. Writes
`experiments/results/range_trust/range_trust.json` (every number below), the plot
`range_trust.png` beside it (final test accuracy against peak LR, seeds as points, the suggested
runs marked) and, with `--write`, the `range-trust` block of docs/results.md. Runs are found by
what they ran (run.json: their `--set`s), and a fed run's peak LR is read from its resolved
config.json, so a rerun of part of a protocol updates the report.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Sequence

from experiments import collect

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(REPO, 'experiments', 'results')
DOC, BLOCK = os.path.join(collect.DOCS, 'results.md'), 'range-trust'
# The copy of a protocol's sweep result that its fed runs read, one per kind of sweep, in the
# study folder: f'{prefix}{infix}lr_range.json' (the prefix is the protocol's: the protocols share
# the folder). The kinds: the accuracy reading at the cycle's
# start momentum, the loss valley (fastai preset), and the accuracy reading of a sweep whose
# momentum falls with the LR (`lr_range.momentum=cyclical`).
SWEEP_KINDS = {'accuracy': '', 'loss': 'loss_', 'cyclical': 'cyclical_'}
# The fed runs of a protocol: the report's key (f'suggested{_kind}{_cap}') -> (table label,
# short label, plot marker, colour).
FED = {'suggested': ('fed the accuracy reading, `effective_step=match`',
                     'accuracy reading, match', '*', 'C3'),
       'suggested_cap': ('fed the accuracy reading, `effective_step=cap` (default)',
                         'accuracy reading, cap', 'P', 'C1'),
       'suggested_loss': ('fed the loss-valley reading (fastai preset), `match`',
                          'loss valley, match', 'D', 'C2'),
       'suggested_loss_cap': ('fed the loss-valley reading (fastai preset), `cap`',
                              'loss valley, cap', 'd', 'C4'),
       'suggested_cyclical_cap': ('fed the accuracy reading of a cyclical-momentum sweep, `cap`',
                                  'cyclical-momentum sweep, cap', 'X', 'C5')}
FED_KEYS = tuple(FED)

# name -> the config, its argument, how the report names the run, and `prefix`, that of the
# sweep copies its fed runs read. Every protocol's runs are arms of the study STUDY.
PROTOCOLS = {
    'lenet_fashion_mnist': {
        'prefix': 'lenet4_',
        'config': 'configs/lenet_fashion_mnist.py', 'args': 'policy=1cycle,epochs=4',
        'title': 'LeNet / Fashion-MNIST, 4 epochs',
        'run': "LeNet on real Fashion-MNIST, the paper's 1cycle at TBS 512 over 4 epochs "
               "(468 updates; cyclical momentum 0.95 → 0.8, Nesterov)"},
    'lenet_fashion_mnist_12': {
        'prefix': 'lenet12_',
        'config': 'configs/lenet_fashion_mnist.py', 'args': 'policy=1cycle,epochs=12',
        'title': 'LeNet / Fashion-MNIST, 12 epochs',
        'run': "LeNet on real Fashion-MNIST, the paper's MNIST 1cycle length: TBS 512 over 12 "
               "epochs (1,406 updates, step size 5 epochs; cyclical momentum 0.95 → 0.8, "
               "Nesterov)"},
    'resnet20': {
        'prefix': 'resnet20_', 'config': 'configs/resnet20.py', 'args': 'policy=1cycle',
        'title': 'ResNet-20 / CIFAR-10 10k subset, 400 updates',
        'run': "the authors' ResNet-20 on a 10,000-image subset of real CIFAR-10, Smith 2018's "
               "1cycle at batch 64 over 400 updates (cyclical momentum 0.95 → 0.85, Nesterov)"},
}


STUDY = 'range_trust'


def _folder(name: str) -> str:
  del name  # every protocol is in the one study
  return STUDY


def result_names(name: str) -> dict[str, str]:
  """The sweep copies that a protocol's fed runs read, by kind of sweep (`SWEEP_KINDS`)."""
  prefix = PROTOCOLS[name]['prefix']
  return {kind: f'{prefix}{infix}lr_range.json' for kind, infix in SWEEP_KINDS.items()}


def sweep_kind(sets: dict) -> str:
  """The kind of sweep that a range test's `--set`s make."""
  if sets.get('lr_range.reading', 'accuracy') == 'loss':
    return 'loss'
  return 'cyclical' if sets.get('lr_range.momentum') == 'cyclical' else 'accuracy'


def fed_kind(path: str) -> str | None:
  """The kind of sweep copy a fed run read, from the copy's file name (its kind infix and
  `lr_range.json`; a range test's own `lr_range.json` is no copy)."""
  name = os.path.basename(path)
  if name == 'lr_range.json' or not name.endswith('lr_range.json'):
    return None
  for kind, infix in sorted(SWEEP_KINDS.items(), key=lambda kv: -len(kv[1])):
    if name.endswith(f'{infix}lr_range.json'):
      return kind
  return None


def _fed_key(kind: str, rule: str) -> str:
  kind_part = '' if kind == 'accuracy' else f'_{kind}'
  return f"suggested{kind_part}{'_cap' if rule == 'cap' else ''}"


def _runs(root: str, name: str):
  """(sets, summary, config, run_dir) of every finished seed of one protocol's config argument."""
  args = PROTOCOLS[name]['args']
  for path in sorted(glob.glob(os.path.join(root, _folder(name), '*', 'seed*', 'run.json'))):
    run_dir = os.path.dirname(path)
    run = json.load(open(path))
    summary_path = os.path.join(run_dir, 'summary.json')
    if run.get('args') != args or not os.path.exists(summary_path):
      continue
    sets = dict(s.split('=', 1) for s in run.get('sets', []))
    config_path = os.path.join(run_dir, 'config.json')
    config = json.load(open(config_path)) if os.path.exists(config_path) else {}
    yield sets, json.load(open(summary_path)), config, run_dir


def _accuracy(summary: dict) -> float:
  """Final test accuracy; a diverged run counts as chance (0.1) and is flagged separately."""
  if summary.get('diverged'):
    return 0.1
  return float(summary['final_eval_accuracy'])


def _stats(summaries: list[dict]) -> dict:
  return {**collect.seed_stats([_accuracy(x) for x in summaries]),
          'diverged': sum(bool(x.get('diverged')) for x in summaries)}


def _fed(runs: list[tuple[dict, dict]]) -> dict | None:
  """The fed runs of one rule: accuracy over seeds and the peak LR they ran at."""
  if not runs:
    return None
  peaks = sorted({round(float(c.get('schedule', {}).get('max_lr', float('nan'))), 6)
                  for _, c in runs})
  return {**_stats([s for s, _ in runs]), 'peak_lr': peaks[0] if len(peaks) == 1 else peaks}


def find_sweep(root: str, name: str, sets: Sequence[str]) -> str | None:
  """The lr_range.json of the protocol's sweep run with these `--set`s: all of them, and no
  other `lr_range.*` (a sweep with one more, e.g. `lr_range.momentum`, is another sweep)."""
  wanted = dict(s.split('=', 1) for s in sets)
  for run_sets, _, _, run_dir in _runs(root, name):
    swept = {k: v for k, v in run_sets.items() if k.startswith('lr_range.')}
    if (run_sets.get('mode') == 'lr_range' and wanted.items() <= run_sets.items()
        and swept.keys() <= wanted.keys()):
      return os.path.join(run_dir, 'lr_range.json')
  return None


def _sweep_view(sweep: dict) -> dict:
  s = sweep['suggestion']
  return {'max_lr': s['max_lr'], 'min_lr_1cycle': s['min_lr_1cycle'],
          'method': s['method'], 'reliable': s['reliable'], 'spread': sweep['spread'],
          'explanation': s.get('explanation', ''),
          'reading': sweep['settings'].get('config', {}).get('lr_range', {}).get('reading',
                                                                                'accuracy'),
          'mode': sweep['settings']['mode'],
          'cost_fraction': sweep['cost'].get('fraction'),
          'eval_split': sweep['settings']['eval_split'],
          'eval_examples': sweep['settings']['eval_examples'],
          'num_steps': sweep['settings']['num_steps'],
          'sweep_lr': [sweep['settings']['min_lr'], sweep['settings']['max_lr']],
          'momentum': _tested_momentum(sweep),
          'wall_seconds': sweep['wall_seconds']}


def protocol_report(root: str, name: str) -> dict:
  spec = PROTOCOLS[name]
  sweeps, fed, grid = {}, {key: [] for key in FED}, {}
  names = result_names(name)
  for kind, file in names.items():
    path = os.path.join(root, _folder(name), file)
    if os.path.exists(path):  # the sweep the fed runs read
      sweeps[_sweep_key(kind)] = json.load(open(path))
  for sets, summary, config, run_dir in _runs(root, name):
    fed_by = sets.get('lr_range_result', '')
    kind = fed_kind(fed_by)
    if sets.get('mode') == 'lr_range':
      if 'sweep' not in sweeps and sweep_kind(sets) == 'accuracy':
        sweeps['sweep'] = json.load(open(os.path.join(run_dir, 'lr_range.json')))
    elif kind:
      # The rule as it ran (its resolved config): the default changed from 'match' to 'cap'
      # after the first accuracy-reading runs, which did not set it.
      rule = config.get('lr_range', {}).get(
          'effective_step', sets.get('lr_range.effective_step',
                                     'match' if kind == 'accuracy' else 'cap'))
      fed[_fed_key(kind, rule)].append((summary, config))
    elif 'schedule.max_lr' in sets and 'lr_range_result' not in sets:
      grid.setdefault(float(sets['schedule.max_lr']), []).append(summary)
  out: dict = {'config': f"{spec['config']}:{spec['args']}", 'grid': {},
               **{_sweep_key(kind): None for kind in SWEEP_KINDS},
               **{key: _fed(runs) for key, runs in fed.items()}}
  for key, sweep in sweeps.items():
    out[key] = _sweep_view(sweep)
  for peak, summaries in sorted(grid.items()):
    out['grid'][f'{peak:g}'] = _stats(summaries)
  means = {p: g['mean'] for p, g in out['grid'].items() if g['n']}
  if means:
    best = max(means, key=means.get)
    out['grid_best'] = {'peak': float(best), 'mean': means[best]}
    for key in FED_KEYS:
      if out[key]:
        out[key]['gap_points'] = 100 * (means[best] - out[key]['mean'])
  hardware = [x.get('host_cpu') for _, x, _, _ in _runs(root, name)]
  out['hardware'] = next((h for h in hardware if h), None)
  return out


def _sweep_key(kind: str) -> str:
  return 'sweep' if kind == 'accuracy' else f'sweep_{kind}'


def _tested_momentum(sweep: dict) -> float | list[float] | None:
  """The sweep's constant momentum, or [start, end] of one that fell with the LR."""
  m = sweep.get('settings', {}).get('config', {}).get('momentum_schedule', {})
  if m.get('name') == 'constant':
    return m.get('value')
  return [m['max_momentum'], m['min_momentum']] if m.get('name') == 'cyclical' else None


def report(root: str = RESULTS) -> dict:
  return {'protocol': 'research/range_trust/run_cpu.sh',
          'protocols': {name: protocol_report(root, name) for name in PROTOCOLS}}


def _pm(s: dict | None) -> str:
  if not s or not s.get('n'):
    return '—'
  return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} (n={s['n']})"


def _sweep_sentence(sw: dict) -> str:
  sp = sw['spread']
  m = sw.get('momentum')
  if isinstance(m, list):
    m = f' at momentum {m[0]:g} → {m[1]:g} (falling as the LR rises)'
  else:
    m = f' at momentum {m:g}' if m is not None else ''
  on = ('the valley of its training loss' if sw['reading'] == 'loss' else
        f"{sw['eval_examples']} {sw['eval_split']} images held out of training")
  text = (f"3 repeats with different data orders{m}, LR {sw['sweep_lr'][0]:g} → "
          f"{sw['sweep_lr'][1]:g} ({sw['mode']}) over {sw['num_steps']} updates, read on {on}: "
          f"max_lr **{sw['max_lr']:.3g}** (median of "
          f"{', '.join(f'{x:.3g}' for x in sp['max_lr'])}; {sp['flat']} flat, "
          f"{sp['unreliable']} unreliable), compute **{100 * sw['cost_fraction']:.1f} %** of the "
          "run's.")
  if not sw['reliable']:
    text += (f" That reading is marked unreliable ({sw['explanation']}), so a run fed it stops "
             'before compiling with a ConfigError: the test declines to answer.')
  return text


def _protocol_markdown(name: str, r: dict) -> list[str]:
  spec = PROTOCOLS[name]
  lines = [f"**{spec['title']}**: {spec['run']}; `{r['config']}`."]
  if r.get('sweep'):
    lines[-1] += ' The range test of that run (accuracy reading), ' + _sweep_sentence(r['sweep'])
  if r.get('sweep_loss'):
    lines[-1] += ' The fastai preset\'s reading, ' + _sweep_sentence(r['sweep_loss'])
  if r.get('sweep_cyclical'):
    lines[-1] += (' The same test with the momentum falling as the LR rises '
                  '(`lr_range.momentum=cyclical`), ' + _sweep_sentence(r['sweep_cyclical']))
  lines += ['', '| peak LR (base = peak / 10) | final test accuracy % | diverged |', '|---|---|---|']
  for peak, g in r['grid'].items():
    lines.append(f'| {peak} | {_pm(g)} | {g["diverged"]} of {g["n"]} |')
  for key, (label, _, _, _) in FED.items():
    f = r.get(key)
    if f:
      peak = f['peak_lr'] if isinstance(f['peak_lr'], float) else f['peak_lr'][0]
      lines.append(f"| **{peak:.3g}** ({label}) | {_pm(f)} | {f['diverged']} of {f['n']} |")
  best = r.get('grid_best')
  if best:
    gaps = [f"{FED[k][1]}: "
            f"**{r[k]['gap_points']:.2f} points**" for k in FED_KEYS if r.get(k)]
    if gaps:
      lines += ['', f"Below the grid's best (peak {best['peak']:g}, {100 * best['mean']:.2f} %): "
                + '; '.join(gaps) + '.']
  lines += ['', f"On {r.get('hardware') or 'this CPU'}.", '']
  return lines


def markdown(report_: dict) -> str:
  lines = []
  for name, r in report_['protocols'].items():
    if r['grid'] or r.get('sweep'):
      lines += _protocol_markdown(name, r)
  lines += ["Target: within 0.5 points of the grid's best, no divergence, at most 10 % of the "
            "run's compute. From `experiments/results/range_trust/range_trust.json` (`bash "
            "research/range_trust/run_cpu.sh`, then `python -m research.range_trust.report "
            "--write`).", '']
  return '\n'.join(lines)


def _finite(stats: dict) -> list[float]:
  """A group's accuracies without its diverged runs (counted as chance, 0.1, in `values`)."""
  vals = sorted(stats['values'])
  return [100 * v for v in vals[stats['diverged']:]]


def _panel(ax, name: str, r: dict) -> None:
  peaks = sorted(r['grid'], key=float)
  ok = [p for p in peaks if not r['grid'][p]['diverged']]
  finite = [v for p in peaks for v in _finite(r['grid'][p])]
  for key in FED_KEYS:
    if r.get(key) and r[key].get('n'):
      finite += _finite(r[key])
  floor = min(finite) - 2 if finite else 0
  for p in peaks:
    vals = _finite(r['grid'][p])
    ax.plot([float(p)] * len(vals), vals, 'o', color='C0', alpha=0.7)
  if ok:
    ax.plot([float(p) for p in ok], [100 * r['grid'][p]['mean'] for p in ok], '-',
            color='C0', label='grid (mean of seeds; line through peaks that never diverged)')
  gone = [p for p in peaks if r['grid'][p]['diverged']]
  for i, p in enumerate(gone):  # on the floor of the axis: a diverged run has no accuracy
    g = r['grid'][p]
    ax.plot([float(p)], [floor + 0.3], 'x', ms=10, color='k',
            label='diverged (runs of all seeds)' if i == 0 else None)
    ax.annotate(f"{g['diverged']}/{g['n']}", (float(p), floor + 0.3), textcoords='offset points',
                xytext=(6, 4), fontsize=7)
  ax.set_ylim(bottom=floor)
  for key, (_, label, marker, color) in FED.items():
    f = r.get(key)
    if f and f.get('n') and isinstance(f['peak_lr'], float):
      vals = _finite(f)
      gone = f' ({f["diverged"]} of {f["n"]} diverged)' if f['diverged'] else ''
      ax.plot([f['peak_lr']] * len(vals), vals, marker, ms=12, color=color,
              label=f"{label}: peak {f['peak_lr']:.3g}{gone}")
      if f['diverged']:
        ax.plot([f['peak_lr']], [floor + 0.3], 'x', ms=12, color=color)
  if r.get('sweep'):
    sp = r['sweep']['spread']
    ax.axvspan(sp['max_lr_min'], sp['max_lr_max'], color='C3', alpha=0.1,
               label='spread of the readings (as read)')
  ax.set_xscale('log')
  ax.set_xticks([float(p) for p in peaks], labels=peaks)
  ax.minorticks_off()
  ax.set_xlabel('peak LR of the 1cycle (base = peak / 10)')
  ax.set_ylabel('final test accuracy (%)')
  ax.set_title(PROTOCOLS[name]['title'], fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def plot(report_: dict, path: str) -> None:
  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  # pylint: enable=g-import-not-at-top
  shown = [(n, r) for n, r in report_['protocols'].items() if r['grid']]
  fig = Figure(figsize=(6 * max(len(shown), 1), 4), layout='constrained')
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, max(len(shown), 1), squeeze=False)[0]
  for ax, (name, r) in zip(axes, shown):
    _panel(ax, name, r)
  fig.suptitle('The range test against a grid of 1cycle peaks')
  fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m research.range_trust.report',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--results', default=RESULTS)
  parser.add_argument('--write', nargs='?', const=DOC, default='', metavar='PAGE',
                      help=f'rewrite the {BLOCK!r} block of this docs page (default {DOC})')
  parser.add_argument('--find-sweep', default='', metavar='PROTOCOL',
                      help="print the lr_range.json of PROTOCOL's sweep run with the --set's")
  parser.add_argument('--set', action='append', default=[], help='with --find-sweep')
  parser.add_argument('--result-name', default='', metavar='PROTOCOL',
                      help="print the path (under the results) of PROTOCOL's sweep copy for "
                           "the kind of sweep its --set's make")
  ns = parser.parse_args(argv)
  if ns.result_name:
    kind = sweep_kind(dict(s.split('=', 1) for s in ns.set))
    print(os.path.join(_folder(ns.result_name), result_names(ns.result_name)[kind]))
    return 0
  if ns.find_sweep:
    found = find_sweep(ns.results, ns.find_sweep, ns.set)
    if not found:
      raise SystemExit(f'no finished sweep of {ns.find_sweep} with {ns.set}')
    print(found)
    return 0
  r = report(ns.results)
  with open(os.path.join(ns.results, STUDY, 'range_trust.json'), 'w') as f:
    json.dump(r, f, indent=2, sort_keys=True)
    f.write('\n')
  if any(p['grid'] for p in r['protocols'].values()):
    plot(r, os.path.join(ns.results, STUDY, 'range_trust.png'))
  text = markdown(r)
  print(text)
  if ns.write:
    collect.write_block(ns.write, BLOCK, text)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
