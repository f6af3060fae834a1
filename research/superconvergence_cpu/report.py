"""The super-convergence comparisons of `research/superconvergence_cpu/run_cpu.sh`, reported.

  python -m research.superconvergence_cpu.report [--write]

Reads `experiments/results/` and writes its `superconvergence_cpu/superconvergence.json` (every
number below), one plot per comparison (test accuracy against iterations, seeds as +-1 std
bands) in the same folder and, with `--write`, the `superconvergence` block of docs/results.md.
Groups are found by what they ran (their config.json), not by folder names:

- LeNet on Fashion-MNIST at batch 512: Caffe 1cycle (the 2018 LeNet row), Caffe `inv`, warm-up +
  cosine at 1cycle's length;
- the authors' ResNet-20 on CIFAR-10 subsets at batch 64: one CLR cycle, PC-LR run 4x as long,
  warm-up + cosine at CLR's length; and the PyTorch twin (`research/torch_twin`) of the
  2,500-image CLR cell against superconv's seeds of it.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

import numpy as np

from experiments import collect
from experiments import plots

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(REPO, 'experiments', 'results')
DOC, BLOCK = os.path.join(collect.DOCS, 'results.md'), 'superconvergence'
SUBSETS = (2500, 10000)
STUDY = 'superconvergence_cpu'  # the study folder of the runs, report and plots


def _find(groups, stem: str, **want) -> collect.Group | None:
  """The group of `stem` whose config has every dotted `want` value (the most seeds first)."""
  found = []
  for g in groups.values():
    if g.stem != stem or not g.config or not g.finished:
      continue
    ok = True
    for key, value in want.items():
      node = g.config
      for part in key.split('__'):
        node = node.get(part) if isinstance(node, dict) else None
      ok &= node == value
    if ok:
      found.append(g)
  found.sort(key=lambda g: -len(g.finished))
  return found[0] if found else None


def _final(g: collect.Group | None) -> dict:
  return collect.seed_stats([r.final_accuracy() for r in g.finished]) if g else {'n': 0}


def _at(g: collect.Group, step: int) -> dict:
  """Each seed's eval accuracy at its last evaluation after at most `step` updates."""
  out = []
  for r in g.finished:
    steps, acc = r.curve()
    hit = np.nonzero(steps <= step)[0]
    out.append(float(acc[hit[-1]]) if hit.size else None)
  return collect.seed_stats(out)


def _steps(g: collect.Group) -> int:
  return max(int(r.curve()[0][-1]) for r in g.finished)


def _pair(fast: collect.Group | None, base: collect.Group | None) -> dict:
  """Final accuracies, accuracy at equal iterations and the iterations-to-target ratio."""
  if fast is None or base is None:
    return {}
  s = collect.speedup(base, fast)
  return {'fast': fast.name, 'baseline': base.name,
          'fast_steps': _steps(fast), 'baseline_steps': _steps(base),
          'fast_final': _final(fast), 'baseline_final': _final(base),
          'baseline_at_fast_steps': _at(base, _steps(fast)),
          'fast_reaches_baseline_final_at': s['fast_steps'], 'ratio': s['ratio'],
          'baseline_reaches_fast_final_at': s['baseline_reaches_fast_final']}


def _twin(groups, ours: collect.Group | None) -> dict:
  twin = next((g for g in groups.values() if g.stem == 'torch_twin'
               and g.group.startswith('resnet20_subset2500_clr')), None)
  if twin is None or ours is None or not twin.finished:
    return {}
  a, b = _final(ours), _final(twin)
  inside = b['n'] and a['n'] and b['min'] <= a['mean'] <= b['max']
  return {'superconv': a, 'torch': b, 'superconv_mean_inside_twin_spread': bool(inside),
          'difference_of_means': a['mean'] - b['mean'], 'twin_group': twin.group}


def report(root: str = RESULTS, draw: bool = True) -> dict:
  """Every number of the comparisons; with `draw`, the plots too (their paths are reported
  either way)."""
  groups = collect.load_groups(root)
  plot = plots.plot_groups if draw else lambda groups, path, *a, **k: path
  out: dict = {'lenet': {}, 'resnet20': {}}
  lenet = dict(
      one_cycle=_find(groups, 'lenet_fashion_mnist', schedule__name='caffe_one_cycle',
                      batch_size=512, num_steps=1406, momentum_schedule__max_momentum=0.95),
      inv=_find(groups, 'lenet_fashion_mnist', schedule__name='inv', batch_size=512),
      cosine=_find(groups, 'lenet_fashion_mnist', schedule__name='warmup_cosine',
                   num_steps=1406))
  out['lenet']['inv'] = _pair(lenet['one_cycle'], lenet['inv'])
  out['lenet']['cosine'] = _pair(lenet['one_cycle'], lenet['cosine'])
  if lenet['inv']:
    # Did inv stop improving? Mean accuracy gained over the last quarter of its run.
    steps, mean, _ = lenet['inv'].mean_curve(runs=lenet['inv'].finished)
    q = np.nonzero(steps >= 0.75 * steps[-1])[0][0]
    out['lenet']['inv_last_quarter_gain'] = float(mean[-1] - mean[q])
  if lenet['cosine']:
    out['lenet']['cosine_config'] = {k: lenet['cosine'].config['schedule'][k]
                                     for k in ('max_lr', 'warmup_steps')}
  grid = [g for g in groups.values() if g.stem == 'lenet_fashion_mnist' and g.finished
          and g.config.get('schedule', {}).get('name') == 'warmup_cosine'
          and g.config['num_steps'] < 1406]
  out['lenet']['cosine_grid'] = sorted(
      ({'max_lr': g.config['schedule']['max_lr'], 'warmup_steps':
        g.config['schedule']['warmup_steps'], 'num_steps': g.config['num_steps'],
        'final': _final(g).get('mean'),
        'diverged': any((r.summary or {}).get('diverged') for r in g.finished)} for g in grid),
      key=lambda r: (r['max_lr'], r['warmup_steps']))
  figures = {}
  if lenet['one_cycle'] and lenet['inv']:
    figures['lenet'] = plot(
        [g for g in (lenet['inv'], lenet['cosine'], lenet['one_cycle']) if g],
        os.path.join(root, STUDY, 'lenet.png'),
        'LeNet on Fashion-MNIST, batch 512, 2-core CPU',
        labels=[f"Caffe inv, {_steps(lenet['inv']):,} it."] +
               ([f"warm-up + cosine, {_steps(lenet['cosine']):,} it."] if lenet['cosine'] else [])
               + [f"Caffe 1cycle 0.01-0.1, {_steps(lenet['one_cycle']):,} it."])
  for n in SUBSETS:
    cells = dict(
        clr=_find(groups, 'resnet20', schedule__name='triangular', batch_size=64,
                  data__train_subset=n),
        pclr=_find(groups, 'resnet20', schedule__name='multistep', batch_size=64,
                   data__train_subset=n),
        cosine=_find(groups, 'resnet20', schedule__name='warmup_cosine', batch_size=64,
                     data__train_subset=n))
    row = {'pclr': _pair(cells['clr'], cells['pclr']), 'cosine': _pair(cells['clr'],
                                                                      cells['cosine'])}
    if row['pclr']:
      row['gain'] = row['pclr']['fast_final']['mean'] - row['pclr']['baseline_final']['mean']
    out['resnet20'][str(n)] = row
    present = [g for g in (cells['pclr'], cells['cosine'], cells['clr']) if g]
    if cells['clr'] and cells['pclr']:
      figures[f'resnet20_{n}'] = plot(
          present, os.path.join(root, STUDY, f'resnet20_{n}.png'),
          f'ResNet-20, {n:,} CIFAR-10 (JPEG) training images, batch 64, 2-core CPU',
          labels=[{'multistep': 'PC-LR 0.35, x0.1 at 375, 525', 'triangular': 'CLR 0.1-1.0-0.1',
                   'warmup_cosine': 'warm-up + cosine'}[g.config['schedule']['name']]
                  + f', {_steps(g):,} it.' for g in present])
    if n == 2500:
      out['twin'] = _twin(groups, cells['clr'])
      twin = next((g for g in groups.values() if g.stem == 'torch_twin'), None)
      if out['twin'] and twin is not None:
        figures['twin'] = plot(
            [cells['clr'], twin], os.path.join(root, STUDY, 'twin.png'),
            'ResNet-20, 2,500 CIFAR-10 images, CLR 0.1-1.0-0.1 over 150 updates',
            labels=['superconv (JAX)', 'PyTorch twin'])
  out['figures'] = {k: os.path.relpath(v, REPO) for k, v in figures.items()}  # as the docs link
  return out


def _pm(s: dict) -> str:
  if not s or not s.get('n'):
    return 'not run'
  return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} % (n={s['n']})"


def markdown(r: dict) -> str:
  lines = []
  inv, cos = r['lenet'].get('inv'), r['lenet'].get('cosine')
  if inv:
    reach = inv['fast_reaches_baseline_final_at']
    back = inv['baseline_reaches_fast_final_at']
    lines.append(
        f"- **LeNet, Fashion-MNIST, batch 512 for both** (the 2018 protocol): Caffe 1cycle 0.01 → "
        f"0.1 with cyclical momentum 0.95 → 0.8 over {inv['fast_steps']:,} iterations (12 epochs) "
        f"ended at {_pm(inv['fast_final'])}; Caffe `inv` over {inv['baseline_steps']:,} "
        f"iterations at {_pm(inv['baseline_final'])} (at {inv['fast_steps']:,} iterations: "
        f"{_pm(inv['baseline_at_fast_steps'])}; its last quarter added "
        f"{100 * r['lenet'].get('inv_last_quarter_gain', float('nan')):.2f} points). "
        + (f"1cycle reached `inv`'s final accuracy at {reach:,} iterations: "
           f"**{inv['ratio']:.1f}x fewer**." if reach else
           "1cycle did **not** reach `inv`'s final accuracy")
        + (f" `inv` reached 1cycle's final accuracy at {back:,}." if back else
           " `inv` never reached 1cycle's final accuracy."))
  if cos:
    cfg = r['lenet'].get('cosine_config', {})
    lines.append(
        f"- **Today's baseline, LeNet**: warm-up + cosine (peak {cfg.get('max_lr')}, "
        f"{cfg.get('warmup_steps')} warm-up updates, chosen from the grid below) at 1cycle's "
        f"{cos['baseline_steps']:,} iterations: {_pm(cos['baseline_final'])} against 1cycle's "
        f"{_pm(cos['fast_final'])}: one cycle "
        + ('**wins**' if cos['fast_final']['mean'] > cos['baseline_final']['max'] else
           '**loses**' if cos['fast_final']['mean'] < cos['baseline_final']['min'] else
           '**ties** (within the seeds)') + '.')
  for n, row in r['resnet20'].items():
    p, c = row.get('pclr'), row.get('cosine')
    if not p:
      continue
    reach = p['fast_reaches_baseline_final_at']
    lines.append(
        f"- **ResNet-20, {int(n):,} CIFAR-10 images, batch 64**: one CLR cycle over "
        f"{p['fast_steps']} iterations {_pm(p['fast_final'])}; PC-LR over {p['baseline_steps']} "
        f"(4x) {_pm(p['baseline_final'])}, and {_pm(p['baseline_at_fast_steps'])} at "
        f"{p['fast_steps']} iterations. "
        + (f"CLR reached PC-LR's final accuracy at {reach}: {p['ratio']:.1f}x fewer iterations."
           if reach else f"CLR did not reach PC-LR's final accuracy (gain "
           f"{100 * row['gain']:+.2f} points).")
        + (f" Warm-up + cosine at CLR's length: {_pm(c['baseline_final'])}." if c else ''))
  t = r.get('twin')
  if t:
    a, b = t['superconv'], t['torch']
    lines.append(
        f"- **The PyTorch twin** (`research/torch_twin`, written from Caffe's semantics) of "
        f"the 2,500-image CLR cell: superconv {_pm(a)} (seeds {', '.join(f'{100 * v:.2f}' for v in a['values'])}); "
        f"twin {_pm(b)} (seeds {', '.join(f'{100 * v:.2f}' for v in b['values'])}). superconv's mean "
        + ('lies **inside** the twin\'s seed spread' if t['superconv_mean_inside_twin_spread']
           else f"lies **outside** the twin's seed spread (difference of means "
           f"{100 * t['difference_of_means']:+.2f} points)") + '.')
  grid = r['lenet'].get('cosine_grid')
  if grid:
    lines.append('- The cosine grid (LeNet, 1 seed, ' + f"{grid[0]['num_steps']} iterations): " +
                 '; '.join(f"peak {g['max_lr']}, warm-up {g['warmup_steps']}: " +
                           ('diverged' if g['diverged'] or g['final'] is None else
                            f"{100 * g['final']:.2f} %") for g in grid) + '.')
  for key, path in r.get('figures', {}).items():
    lines.append(f'\n  ![{key}](../{path})')  # the block lives in docs/
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m research.superconvergence_cpu.report',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--results', default=RESULTS)
  parser.add_argument('--write', nargs='?', const=DOC, default='', metavar='PAGE',
                      help=f'rewrite the {BLOCK!r} block of this docs page (default {DOC})')
  ns = parser.parse_args(argv)
  r = report(ns.results)
  os.makedirs(os.path.join(ns.results, STUDY), exist_ok=True)
  with open(os.path.join(ns.results, STUDY, 'superconvergence.json'), 'w') as f:
    json.dump(r, f, indent=1, sort_keys=True)
  text = markdown(r)
  print(text)
  if ns.write:
    collect.write_block(ns.write, BLOCK, text)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
