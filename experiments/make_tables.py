r"""Markdown results table from experiments/results/, with the paper's and the authors' numbers.

  python -m experiments.make_tables                       # print the table
  python -m experiments.make_tables --write              # rewrite docs/results.md's table
  python -m experiments.make_tables --write --committed  # from what git holds, not runs in flight
  python -m experiments.make_tables --pair resnet56_baseline resnet56:policy=clr

One row per arm of a study (its seeds): study/arm | config | paper ref | schedule | steps | paper
value | authors' log | ours (mean +- sample std over n seeds of the final test accuracy) |
hardware | wall time. Paper and log numbers come from `REFERENCES` (paper digest §2, §6, §7),
matched to a group by its resolved config, so 'resnet56' and 'resnet56:policy=clr' are one row.

Below the table, for each (baseline, fast) pair present, the iterations the fast schedule needed
to reach the baseline's final mean accuracy (first evaluated step where its seed-mean accuracy
is >= that value) and the ratio baseline steps / those steps.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from typing import Sequence

from experiments import collect
from superconv import schedule_registry

DOC, BLOCK = os.path.join(collect.DOCS, 'results.md'), 'results'

# (config stem, args) -> (paper reference, paper value %, authors' log %). Digest §2, §6, §7.
REFERENCES: dict[tuple[str, str], tuple[str, str, str]] = {
    ('resnet56', 'policy=clr'): ('1708.07120 Fig. 1a CLR', '92.4', '92.44 (best 92.49)'),
    # BN groups of 125: the paper's 8 GPUs x 125 on one device.
    ('resnet56', 'bn_groups=8'): ('1708.07120 Fig. 1a CLR', '92.4', '92.44 (best 92.49)'),
    ('resnet56_baseline', ''): ('1708.07120 Fig. 1a PC-LR', '91.2', '90.32 (best 90.39)'),
    ('resnet56_stepsize', 'stepsize=1000'): ('1708.07120 Fig. 1b SS 1k', '89.7', '—'),
    ('resnet56_stepsize', 'stepsize=3000'): ('1708.07120 Fig. 1b SS 3k', '92.1', '—'),
    ('resnet56_stepsize', 'stepsize=5000'): ('1708.07120 Fig. 1b SS 5k', '92.4', '92.44'),
    ('resnet56_stepsize', 'stepsize=10000'): ('1708.07120 Fig. 1b SS 10k', '92.7', '—'),
    ('resnet56_lr_range', 'iters=5000'): ('1708.07120 Fig. 2b 5k', '—',
                                          '78.44 at LR 3 (peak 81.56)'),
    ('resnet56_lr_range', 'iters=20000'): ('1708.07120 Fig. 2b 20k', '—',
                                           '78.55 at LR 3 (peak 83.13)'),
    ('resnet56_lr_range', 'iters=100000'): ('1708.07120 Fig. 2b 100k', '—',
                                            '72.25 at LR 3 (peak 86.49)'),
    ('resnet56_lr_range', 'iters=80000,max_lr=2'): ('README Fig. 4a (0-2 / 80k)', '—',
                                                    '87.78 at LR 2 (peak 89.36)'),
    ('resnet20', 'policy=clr'): ('1708.07120 Fig. 4b', '90.4', '90.42'),
    ('resnet20', 'policy=pclr'): ('1708.07120 Fig. 4b', '88.6', '88.64 (best 88.77)'),
    ('resnet20', 'policy=lr_range'): ('README Fig. 4b (0-2 / 80k)', '—', '82.60 (peak 84.63)'),
    ('resnet110', 'policy=clr'): ('1708.07120 Fig. 4b', '92.1', '92.37'),
    ('resnet110', 'policy=pclr'): ('1708.07120 Fig. 4b', '91.0', '91.21 (best 91.22)'),
    ('resnet110', 'policy=lr_range'): ('README Fig. 4b (0-2 / 80k)', '—', '71.38 (peak 87.31)'),
    ('resnet56_cifar100', 'policy=clr'): ('README Fig. 7 (C100)', '—', '68.20'),
    ('resnet56_cifar100', 'policy=pclr'): ('README Fig. 7 (C100)', '—', '59.27 (best 59.80)'),
    ('resnet56_cifar100', 'policy=lr_range'): ('README Fig. 7 (C100 range)', '—',
                                               '40.82 (peak 51.78)'),
    ('resnet56_cifar100', 'policy=1cycle,epochs=25'): ('1803.09820 Tab. 2', '65.4 ± 0.2', '—'),
    ('resnet56_cifar100', 'policy=1cycle,epochs=50'): ('1803.09820 Tab. 2', '66.4 ± 0.6', '—'),
    ('resnet56_cifar100', 'policy=1cycle,epochs=100'): ('1803.09820 Tab. 2', '69.0 ± 0.4', '—'),
    ('resnet56_optimizers', 'opt=nesterov,policy=pclr'): ('README Fig. 8a', '—',
                                                          '90.33 (best 90.48)'),
    ('resnet56_optimizers', 'opt=nesterov,policy=clr'): ('README Fig. 8b', '—', '92.47'),
    ('resnet56_optimizers', 'opt=adam,policy=pclr'): ('README Fig. 8a', '—',
                                                      '87.15 (best 90.72)'),
    ('resnet56_optimizers', 'opt=adagrad,policy=pclr'): ('README Fig. 8a', '—', '83.74'),
    ('resnet56_optimizers', 'opt=adadelta,policy=pclr'): ('README Fig. 8a', '—',
                                                          '70.97 (best 71.63)'),
    ('resnet56_regularization', 'sweep=momentum,value=0.95'): ('README Fig. 10a', '—', '90.74'),
    ('resnet56_regularization', 'sweep=momentum,value=0.9'): ('README Fig. 10a', '—', '92.44'),
    ('resnet56_regularization', 'sweep=momentum,value=0.85'): ('README Fig. 10a', '—', '92.29'),
    ('resnet56_regularization', 'sweep=momentum,value=0.8'): ('README Fig. 10a', '—', '91.86'),
    ('resnet56_regularization', 'sweep=wd,value=1e-3'): ('README Fig. 10b', '—',
                                                         '9.95 (best 65.87)'),
    ('resnet56_regularization', 'sweep=wd,value=1e-5'): ('README Fig. 10b', '—', '88.28'),
    ('resnet56_regularization', 'sweep=wd,value=1e-6'): ('README Fig. 10b', '—', '87.25'),
    ('resnet56_regularization', 'lr_range,sweep=dropout,value=0.2'): (
        'README Fig. 9b (range)', '—', '77.87 at LR 3 (peak 86.33)'),
    ('bottleneck_resnet56', 'clip=2'): ('Results Fig12a', '—', '17.36 at LR 3 (peak 51.69)'),
    ('bottleneck_resnet56', 'clip=5'): ('Results Fig12a', '—', '11.96 at LR 3 (peak 48.17)'),
    ('resnext56', 'clip=2'): ('Results Fig12b', '—', '18.23 (peak 46.11), stopped at 16,100'),
    ('resnext56', 'clip=5'): ('Results Fig12b', '—', '21.05 (peak 46.22), stopped at 12,800'),
    ('resnext56', 'clip=10'): ('Results Fig12a/b', '—', '17.34 / 10.27 (peaks 45.91 / 43.42)'),
    ('wide_resnet32', 'policy=1cycle,epochs=25'): ('1803.09820 Tab. 2', '87.3 ± 0.8', '—'),
    ('wide_resnet32', 'policy=1cycle,epochs=50'): ('1803.09820 Tab. 2', '91.3 ± 0.1',
                                                   '91.38 (best 91.45)'),
    ('wide_resnet32', 'policy=1cycle,epochs=100'): ('1803.09820 Tab. 2', '91.9 ± 0.2', '—'),
    ('wide_resnet32', 'policy=step,epochs=100'): ('1803.09820 Tab. 2', '86.7 ± 0.6', '—'),
    ('wide_resnet32', 'policy=step,epochs=200'): ('1803.09820 Tab. 2', '88.7 ± 0.6', '—'),
    ('wide_resnet32', 'policy=step,epochs=400'): ('1803.09820 Tab. 2', '98.8 ± 0.4 (typo?)', '—'),
    ('wide_resnet32', 'policy=step,epochs=800'): ('1803.09820 Tab. 2', '90.3 ± 1.0', '—'),
    ('densenet40', 'policy=1cycle,epochs=50'): ('1803.09820 Tab. 2', '91.7 ± 0.3', '91.53'),
    ('densenet40', 'policy=1cycle,epochs=75'): ('1803.09820 Tab. 2', '92.1 ± 0.2', '—'),
    ('densenet40', 'policy=1cycle,epochs=100'): ('1803.09820 Tab. 2', '92.2 ± 0.2', '—'),
    ('densenet40', 'policy=1cycle,epochs=150'): ('1803.09820 Tab. 2', '92.8 ± 0.1', '—'),
    ('densenet40', 'policy=step,epochs=100'): ('1803.09820 Tab. 2', '91.3 ± 0.2', '—'),
    ('densenet40', 'policy=step,epochs=200'): ('1803.09820 Tab. 2', '92.1 ± 0.2', '—'),
    ('densenet40', 'policy=step,epochs=400'): ('1803.09820 Tab. 2', '92.7 ± 0.2',
                                               '93.03 (best 93.46)'),
    ('lenet_mnist', 'policy=inv,epochs=85'): ('1803.09820 Tab. 2', '99.03 ± 0.04', '—'),
    ('lenet_mnist', 'policy=step,epochs=85'): ('1803.09820 Tab. 2', '99.00 ± 0.04', '—'),
    ('lenet_mnist', 'policy=1cycle,epochs=12'): ('1803.09820 Tab. 2', '99.25 ± 0.03', '—'),
    ('lenet_mnist', 'policy=1cycle,epochs=25'): ('1803.09820 Tab. 2', '99.28 ± 0.06', '—'),
    ('lenet_mnist', 'policy=1cycle,epochs=50'): ('1803.09820 Tab. 2', '99.27 ± 0.07', '—'),
    ('lenet_mnist', 'policy=1cycle,epochs=85'): ('1803.09820 Tab. 2', '99.35 ± 0.03', '—'),
    ('resnet50_imagenet', 'policy=1cycle,wd=3e-6'): ('1803.09820 §5.5', '67.6 (best)',
                                                     '66.37 (best 67.31)'),
    ('resnet50_imagenet', 'policy=1cycle,wd=1e-6'): ('1803.09820 §5.5', '—',
                                                     '63.61 (best 64.79)'),
    ('resnet50_imagenet', 'policy=step'): ('1803.09820 §5.5', '63.7 (130 ep.)',
                                           '63.70 (best 64.43)'),
    ('inception_resnet_v2_imagenet', 'wd=3e-6'): ('1803.09820 §5.5', '74.0',
                                                  '73.82 / 73.86 (best 74.72 / 75.48)'),
    ('inception_resnet_v2_imagenet', 'wd=1e-6'): ('1803.09820 §5.5', '—', '72.96 / 72.26'),
    ('inception_resnet_v2_imagenet', 'policy=step'): ('1803.09820 §5.5', '67.6 (100 ep.)',
                                                      '68.02 (best 69.80)'),
}
for _n, (_pc, _cl) in {10_000: (('71.4', '71.20 (best 71.26)'), ('80.6', '80.59 (best 80.90)')),
                       20_000: (('82.7', '62.33 (best 76.40)'), ('87.9', '87.92 (best 87.94)')),
                       30_000: (('85.7', '86.36 (best 86.52)'), ('89.6', '89.64 (best 89.65)')),
                       40_000: (('89.1', '90.43 (best 90.59)'), ('91.1', '91.10')),
                       50_000: (('91.2', '90.32 (best 90.39)'), ('92.4', '92.44 (best 92.49)'))
                       }.items():
  REFERENCES[('resnet56_subset', f'policy=pclr,samples={_n}')] = ('1708.07120 Tab. 1', *_pc)
  REFERENCES[('resnet56_subset', f'policy=clr,samples={_n}')] = ('1708.07120 Tab. 1', *_cl)

# (baseline, fast): 'stem', 'stem:args' or 'study/arm'. The paper's "same accuracy in fewer
# iterations".
PAIRS: list[tuple[str, str]] = [
    ('resnet56_baseline', 'resnet56:policy=clr'),
    ('resnet20:policy=pclr', 'resnet20:policy=clr'),
    ('resnet110:policy=pclr', 'resnet110:policy=clr'),
    ('resnet56_cifar100:policy=pclr', 'resnet56_cifar100:policy=clr'),
    ('resnet56_optimizers:opt=nesterov,policy=pclr',
     'resnet56_optimizers:opt=nesterov,policy=clr'),
    ('lenet_mnist:policy=inv,epochs=85', 'lenet_mnist:policy=1cycle,epochs=12'),
    ('lenet_fashion_mnist:policy=inv', 'lenet_fashion_mnist:policy=1cycle'),
    ('densenet40:policy=step,epochs=400', 'densenet40:policy=1cycle,epochs=150'),
    ('wide_resnet32:policy=step,epochs=800', 'wide_resnet32:policy=1cycle,epochs=100'),
] + [(f'resnet56_subset:policy=pclr,samples={n}', f'resnet56_subset:policy=clr,samples={n}')
     for n in (10_000, 20_000, 30_000, 40_000, 50_000)] + [
    # The CPU-scale studies, named 'study/arm'.
    ('fig4b_cpu/pclr_5k', 'fig4b_cpu/clr_5k'),
    ('lenet_fmnist_range/inv_12ep', 'lenet_fmnist_range/1cycle_4ep_fed'),
    ('lenet_fmnist_range/step_12ep', 'lenet_fmnist_range/1cycle_4ep_fed'),
]


def reference(group: collect.Group) -> tuple[str, str, str]:
  for (stem, args), ref in REFERENCES.items():
    if group.matches(stem, args):
      return ref
  # A run recorded before superconv adopted Caffe's BN estimator and FC-bias decay (its config
  # has no optimizer.decay_fc_bias) no longer resolves to today's paper config, but it is still
  # the paper row it ran for: named so, with the difference said.
  if group.config and 'decay_fc_bias' not in group.config.get('optimizer', {}):
    for (stem, args), (ref, paper, log) in REFERENCES.items():
      if stem == group.stem and collect.canonical_args(args) == group.args and ref != '—':
        return (f'{ref} (run before Caffe\'s BN estimator)', paper, log)
  return ('—', '—', '—')


def _g(x) -> str:
  return f'{x:g}'


def describe_schedule(config: dict) -> str:
  """A short human description of a resolved config's LR (and momentum) schedule."""
  if not config:
    return '?'
  s, m, o = config['schedule'], config['momentum_schedule'], config['optimizer']
  # The text of each LR schedule is its registry entry's (it reads the fields by name, so a
  # results config.json of the older flat layout reads the same).
  name = 'lr_range' if config.get('mode') == 'lr_range' else s['name']
  kind = schedule_registry.SCHEDULES.get(name)
  if kind is None:
    text = name
  else:
    text = kind.describe(config[kind.section])
  if m['name'] in ('cyclical', 'one_cycle'):
    text += f", CM {_g(m['max_momentum'])}–{_g(m['min_momentum'])}"
  optimizer = o['name'] if o['name'] != 'sgd' else ('Nesterov' if o.get('nesterov') else '')
  return f'{optimizer} {text}'.strip()


def _pct(x: float) -> str:
  return f'{100 * x:.2f}'


def ours(group: collect.Group) -> str:
  """Final test accuracy, mean ± sample std over the finished seeds (range tests: the final
  value is at the top LR, plus the mean peak)."""
  mean, std, n = group.stat(lambda r: r.final_accuracy())
  diverged = sum(bool((r.summary or {}).get('diverged')) for r in group.finished)
  if n == 0 and diverged:
    return f'diverged ({diverged} of {len(group.runs)})'
  if n == 0:
    return f'running (0/{len(group.runs)} done)'
  text = f'{_pct(mean)} ± {_pct(std)} (n={n})'
  if group.config.get('mode') == 'lr_range':
    peak, _, _ = group.stat(lambda r: r.best_accuracy())
    text = f'{_pct(mean)} at top LR, peak {_pct(peak)} (n={n})'
  if diverged:
    text += f', {diverged} diverged'
  return text


def _hardware(group: collect.Group) -> str:
  run = (group.finished or group.runs)[0]
  info = {**run.info.get('hardware', {}), **(run.summary or {})}
  devices = info.get('devices', '?')
  if info.get('platform') == 'cpu' and info.get('host_cpu'):
    return f"CPU: {info['host_cpu']}"
  return devices


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '—'
  if seconds >= 3600:
    return f'{seconds / 3600:.1f} h'
  if seconds >= 60:
    return f'{seconds / 60:.1f} min'
  return f'{seconds:.0f} s'


def table(groups: dict[tuple[str, str], collect.Group]) -> str:
  """The markdown results table, one row per group."""
  head = ('study/arm', 'config', 'paper ref', 'schedule', 'steps', 'paper value', "authors' log",
          'ours (mean ± std)', 'hardware', 'wall time')
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for group in groups.values():
    if not group.config:  # not a superconv run (the PyTorch twin's results live beside them)
      continue
    ref, paper, log = reference(group)
    wall, _, _ = group.stat(lambda r: (r.summary or {}).get('wall_seconds'))
    config = f'{group.stem}:{group.args}' if group.args else group.stem
    cells = (f'`{group.name}`', f'`{config}`', ref, describe_schedule(group.config),
             f"{group.config.get('num_steps', '?'):,}" if group.config else '?', paper, log,
             ours(group), _hardware(group), _duration(wall))
    lines.append('| ' + ' | '.join(str(c).replace('|', '\\|') for c in cells) + ' |')
  return '\n'.join(lines) + '\n'


def speedups(groups: dict[tuple[str, str], collect.Group],
             pairs: Sequence[tuple[str, str]]) -> list[dict]:
  out = []
  for base_spec, fast_spec in pairs:
    base, fast = collect.find_group(groups, base_spec), collect.find_group(groups, fast_spec)
    if base is not None and fast is not None and base.finished and fast.runs:
      out.append(collect.speedup(base, fast))
  return out


def _its(steps, epochs_per_step) -> str:
  text = f'{steps:,} iterations'
  return text + (f' ({steps * epochs_per_step:.1f} epochs)' if epochs_per_step else '')


def speedup_lines(results: Sequence[dict]) -> str:
  lines = []
  for s in results:
    be, fe = s.get('baseline_epochs_per_step'), s.get('fast_epochs_per_step')
    head = (f"- `{s['fast']}` vs `{s['baseline']}` (final {_pct(s['target'])} % at "
            f"{_its(s['baseline_steps'], be)}): ")
    if s['fast_steps'] is None:
      line = head + 'never reached'
    else:
      line = head + (f"reached at {_its(s['fast_steps'], fe)}, "
                     f"{s['ratio']:.1f}x fewer iterations")
    if s.get('fast_final') is not None and s.get('fast_total_steps'):
      back = s.get('baseline_reaches_fast_final')
      line += (f"; its own final {_pct(s['fast_final'])} % came at "
               f"{_its(s['fast_total_steps'], fe)}, which the baseline "
               + (f"first reached at {_its(back, be)}" if back is not None else 'never reached'))
    lines.append(line + '.')
  return '\n'.join(lines) + ('\n' if lines else '')


def markdown(groups: dict[tuple[str, str], collect.Group],
             pairs: Sequence[tuple[str, str]] = PAIRS) -> str:
  """The docs block: the table, then the iterations-to-baseline lines of the pairs present."""
  text = table(groups)
  fast = speedup_lines(speedups(groups, pairs))
  if fast:
    text += '\nIterations to reach the baseline\'s final accuracy:\n\n' + fast
  return text


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m experiments.make_tables', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--results', default=os.path.join(os.path.dirname(__file__), 'results'))
  parser.add_argument('--write', nargs='?', const=DOC, default='', metavar='PAGE',
                      help=f'rewrite the {BLOCK!r} block of this docs page (default {DOC})')
  parser.add_argument('--output', default='', help='also write the markdown here')
  parser.add_argument('--committed', action='store_true',
                      help="read the results git's index holds (not runs still being made)")
  parser.add_argument('--pair', nargs=2, action='append', metavar=('BASELINE', 'FAST'),
                      help="'stem[:args]' of a baseline and a fast group (default: PAIRS)")
  ns = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    root = (collect.committed_results(tmp) if ns.committed else None) or ns.results
    groups = collect.load_groups(root)
    text = markdown(groups, ns.pair or PAIRS)
  print(text, end='')
  if ns.output:
    with open(ns.output, 'w') as f:
      f.write(text)
  if ns.write:
    collect.write_block(ns.write, BLOCK, text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
