r"""Paper-style plots of experiments/results/: test accuracy vs iteration, the LR underneath.

  python -m experiments.plots                      # every group + the paper figures present
  python -m experiments.plots --groups resnet56_baseline resnet56:policy=clr --out fig1a.png

Each curve is the mean over seeds of the test accuracy at the steps every seed evaluated, with a
band of +- one sample std when there is more than one seed; the panel below shows the LR
schedule as logged. An LR range test is drawn as accuracy against the learning rate (the
paper's Fig. 2b). PNGs are written next to the results: <group>/curves.png for every group and
results/<figure>.png for the paper figures in `FIGURES` whose groups exist.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from experiments import collect  # pylint: disable=g-import-not-at-top,wrong-import-position

# Paper figures: file name -> (title, group specs 'stem[:args]').
FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    'fig1a': ('ResNet-56 CIFAR-10: PC-LR vs CLR (1708.07120 Fig. 1a)',
              ('resnet56_baseline', 'resnet56:policy=clr')),
    'fig1b': ('ResNet-56 CIFAR-10: CLR step sizes (Fig. 1b)',
              tuple(f'resnet56_stepsize:stepsize={s}' for s in (1000, 3000, 5000, 10000))),
    'fig2b': ('ResNet-56 CIFAR-10: LR range tests (Fig. 2b)',
              tuple(f'resnet56_lr_range:iters={n}' for n in (5000, 20000, 100000))),
    'fig4b': ('ResNet-20/110: PC-LR vs CLR (Fig. 4b)',
              ('resnet20:policy=pclr', 'resnet20:policy=clr', 'resnet110:policy=pclr',
               'resnet110:policy=clr')),
    'table1_10k': ('ResNet-56, 10k training images (Table 1)',
                   ('resnet56_subset:policy=pclr,samples=10000',
                    'resnet56_subset:policy=clr,samples=10000')),
    'cifar100': ('ResNet-56 CIFAR-100: PC-LR vs CLR',
                 ('resnet56_cifar100:policy=pclr', 'resnet56_cifar100:policy=clr')),
    'lenet_mnist': ('LeNet MNIST: inv vs 1cycle (1803.09820 Tab. 2)',
                    ('lenet_mnist:policy=inv,epochs=85', 'lenet_mnist:policy=1cycle,epochs=12')),
    'lenet_fashion_mnist': ('LeNet Fashion-MNIST (ours)',
                            ('lenet_fashion_mnist:policy=inv', 'lenet_fashion_mnist:policy=step',
                             'lenet_fashion_mnist:policy=1cycle')),
}


def _lr_at(run: collect.Run, steps: np.ndarray) -> np.ndarray:
  """The logged LR interpolated at `steps` (range tests log it at every log step)."""
  lr_steps, lrs = run.curve('lr')
  if not lr_steps.size:
    return np.full(steps.shape, np.nan)
  return np.interp(steps, lr_steps, lrs)


def plot_groups(groups: Sequence[collect.Group], path: str, title: str = '', *,
                labels: Sequence[str] = (), x: str = 'iteration') -> str:
  """Writes one PNG comparing `groups`; returns its path.

  `x='epochs'` puts training epochs (updates x batch / training examples) on the x axis, for
  policies run at different batch sizes; `labels` replace the groups' long names in the legend.
  """
  names = {id(g): (labels[i] if i < len(labels) else g.name) for i, g in enumerate(groups)}
  scale = lambda g: (collect.epochs_per_step(g) or 1.0) if x == 'epochs' else 1.0
  range_tests = [g for g in groups if g.config.get('mode') == 'lr_range']
  curves = [g for g in groups if g.config.get('mode') != 'lr_range']
  panels = (1 if curves else 0) * 2 + (1 if range_tests else 0)
  heights = ([3, 1] if curves else []) + ([3] if range_tests else [])
  fig, axes = plt.subplots(panels, 1, figsize=(7, 1.6 * sum(heights)), squeeze=False,
                           gridspec_kw={'height_ratios': heights})
  axes = list(axes[:, 0])
  if curves:
    acc_ax, lr_ax = axes[0], axes[1]
    acc_ax.sharex(lr_ax)
    for g in curves:
      steps, mean, std = g.mean_curve(runs=g.finished or g.runs)
      if not steps.size:
        continue
      n = len(g.finished or g.runs)
      (line,) = acc_ax.plot(steps * scale(g), 100 * mean, label=f'{names[id(g)]} (n={n})',
                            lw=1.2)
      if n > 1:
        acc_ax.fill_between(steps * scale(g), 100 * (mean - std), 100 * (mean + std),
                            color=line.get_color(), alpha=0.25, lw=0)
      lr_steps, lrs = g.runs[0].curve('lr')
      lr_ax.plot(lr_steps * scale(g), lrs, color=line.get_color(), lw=1.0)
    acc_ax.set_ylabel('test accuracy (%)')
    acc_ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=7, loc='lower right')
    lr_ax.set_ylabel('learning rate')
    lr_ax.set_xlabel('epoch' if x == 'epochs' else 'iteration')
    lr_ax.grid(alpha=0.3)
    if title:
      acc_ax.set_title(title, fontsize=9)
  if range_tests:
    ax = axes[-1]
    for g in range_tests:
      steps, mean, std = g.mean_curve(runs=g.finished or g.runs)
      if not steps.size:
        continue
      lr = _lr_at(g.runs[0], steps)
      (line,) = ax.plot(lr, 100 * mean, label=f'{g.name} (n={len(g.finished or g.runs)})',
                        lw=1.2)
      if len(g.finished or g.runs) > 1:
        ax.fill_between(lr, 100 * (mean - std), 100 * (mean + std), color=line.get_color(),
                        alpha=0.25, lw=0)
    ax.set_xlabel('learning rate')
    ax.set_ylabel('test accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    if title and not curves:
      ax.set_title(title, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_all(root: str) -> list[str]:
  """curves.png in every group folder, and each paper figure whose groups exist."""
  groups = collect.load_groups(root)
  written = []
  for g in groups.values():
    written.append(plot_groups([g], os.path.join(g.folder, 'curves.png'), g.name))
  for name, (title, specs) in FIGURES.items():
    present = [g for g in (collect.find_group(groups, s) for s in specs) if g is not None]
    if present:
      written.append(plot_groups(present, os.path.join(root, f'{name}.png'), title))
  return written


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m experiments.plots', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--results', default=os.path.join(os.path.dirname(__file__), 'results'))
  parser.add_argument('--groups', nargs='+', default=[], help="'stem[:args]' specs to compare")
  parser.add_argument('--out', default='', help='PNG path for --groups')
  parser.add_argument('--title', default='')
  parser.add_argument('--labels', nargs='+', default=[], help='legend labels for --groups')
  parser.add_argument('--x', default='iteration', choices=['iteration', 'epochs'])
  ns = parser.parse_args(argv)
  if ns.groups:
    groups = collect.load_groups(ns.results)
    found = [collect.find_group(groups, s) for s in ns.groups]
    missing = [s for s, g in zip(ns.groups, found) if g is None]
    if missing:
      parser.error(f'no results for {missing} under {ns.results}')
    out = ns.out or os.path.join(ns.results, 'comparison.png')
    print(plot_groups(found, out, ns.title, labels=ns.labels, x=ns.x))
  else:
    for path in plot_all(ns.results):
      print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
