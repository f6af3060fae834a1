r"""The equal-budget study: 1cycle (range-tested and grid-tuned) against 2026's schedules.

  python -m experiments.budget.study run lenet_1ep [--arms linear wsd] [--seeds 0 1 2]
  python -m experiments.budget.study run cifar_4ep --data /path/to/cifar10-jpeg.tar.gz
  python -m experiments.budget.study report lenet_1ep  # docs/baselines.md, plots, study.json

A protocol (`PROTOCOLS`) names a config file, a budget (epochs at its batch: the same number of
updates for every run), a validation split and its arms. Every arm gets the same tuning budget:

  * a grid arm runs each peak LR of its grid once (seed 0), trained without the validation
    examples and read on them at the end (`data.validation_examples`); the best peak wins;
  * the range-test arm runs one LR range test (a sweep read on the same validation split) and
    feeds its suggestion to the run (`lr_range_result`); the sweep's updates are its tuning cost.

The best setting of each arm is then run at the final seeds on the full training set and read on
the test split, which no tuning decision ever reads. Everything is written as it finishes, under

  experiments/results/<protocol>/<arm>/seed<N>/          the final seeds
  experiments/results/<protocol>/<arm>.p<peak>/seed0/     the grid's tuning runs
  experiments/results/<protocol>/<arm>.sweep/seed0/       the range test
  experiments/results/<protocol>/manifest.json

through `experiments.run.run_seed`, so a finished seed is skipped and the same command resumes.
`report` reads those files only: per arm the final test accuracy (mean ± std over seeds), a
Welch t-test against the range-test 1cycle arm, the compute spent (tuning + final runs, in
updates and seconds), updates and seconds to accuracy targets, and accuracy-vs-updates /
accuracy-vs-seconds curves with seed bands.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Sequence

import numpy as np

from experiments import collect
from experiments import run as run_lib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DOC = os.path.join(ROOT, 'docs', 'baselines.md')
REFERENCE = '1cycle_range'  # the arm every other arm is tested against
CHANCE = 0.1  # the accuracy a diverged run is scored at (10 classes)


@dataclasses.dataclass(frozen=True)
class Arm:
  """One arm: a schedule of the protocol's config, tuned by a grid of peaks or a range test."""
  schedule: str
  grid: tuple[float, ...] = ()
  # A grid arm may read another arm's grid runs (`grid_of`, its tuning cost is that grid's) and
  # pick by another rule: 'best' (the highest validation accuracy) or 'stable' (the best peak
  # below the lowest one that diverged: a peak above a diverged one sits at the edge of
  # stability, which one tuning seed cannot see).
  grid_of: str = ''
  rule: str = 'best'
  # The range test (when `grid` is empty): a linear sweep 0 -> sweep_max_lr over sweep_steps
  # updates, read on the validation split every sweep_eval_every updates.
  sweep_max_lr: float = 0.0
  sweep_steps: int = 0
  sweep_eval_every: int = 0

  @property
  def range_tested(self) -> bool:
    return not self.grid


@dataclasses.dataclass(frozen=True)
class Protocol:
  config: str                    # the config file, relative to the repository root
  epochs: float                  # the budget: epochs of the config's training set at its batch
  validation: int                # training examples held out for tuning
  arms: dict[str, Arm]
  seeds: tuple[int, ...]
  question: str
  targets: tuple[float, ...]     # test accuracies for the time-to-target table
  sets: tuple[str, ...] = ()     # config overrides of every run (a toy study's shrunk runs)
  data: str = ''                 # the local data set `run --data` must name ('' = the config's)

  def args(self, arm: Arm, peak: float | None = None, tuning: bool = False) -> str:
    a = f'schedule={arm.schedule},epochs={self.epochs:g}'
    if peak is not None:
      a += f',peak={peak:g}'
    if tuning:
      a += f',validation={self.validation}'
    return a


# Caffe-form SGD with momentum 0.9 diverged on this LeNet at a cosine peak of 0.1 (3 epochs, batch
# 512), so the SGD grids double from 0.01 (0.02 for 1cycle, whose momentum is 0.85 at the peak);
# schedule-free SGD carries no heavy-ball factor 1 / (1 - 0.9), so its grid sits higher. Its first
# grid (0.25-2, its authors' 10-50x the classical LR) diverged above 0.25 at 1 epoch, so it now
# doubles up to 0.25 from 0.03125.
_SGD_GRID = (0.01, 0.02, 0.04, 0.08)


def _arms(sweep: Arm, one_cycle: tuple[float, ...], sgd: tuple[float, ...],
          schedule_free: tuple[float, ...]) -> dict[str, Arm]:
  """A protocol's six arms: the range-tested 1cycle (`sweep`) and the grid-tuned ones."""
  return {REFERENCE: sweep, '1cycle_grid': Arm('one_cycle', grid=one_cycle),
          'linear': Arm('linear', grid=sgd), 'wsd': Arm('wsd', grid=sgd),
          'schedule_free': Arm('schedule_free', grid=schedule_free),
          'cosine': Arm('cosine', grid=sgd)}


_LENET_ARMS = _arms(Arm('one_cycle', sweep_max_lr=0.3, sweep_steps=100, sweep_eval_every=4),
                    (0.02, 0.04, 0.08, 0.16), _SGD_GRID, (0.03125, 0.0625, 0.125, 0.25))
# Added after lenet_3ep's final seeds, as a labelled sensitivity check: there three of the four
# SGD grids had 0.04 diverge and 0.08 score best, and at 0.08 most final seeds diverged. These
# arms read the same grid runs (no new tuning) and pick the best peak below the lowest diverged one.
_LENET_STABLE = {f'{a}_stable': Arm(a, grid=_SGD_GRID, grid_of=a, rule='stable')
                 for a in ('linear', 'wsd', 'cosine')}
_LENET_QUESTION = (
    'At an equal budget of updates, with tuning counted, does one LR cycle with its range test '
    'still beat 2026\'s schedules? LeNet on Fashion-MNIST, batch 512, {epochs} epochs ({steps} '
    'updates): 1cycle tuned by one LR range test (its sweep counted), 1cycle tuned by a 4-point '
    'grid of peak LRs, and the same 4-point grid for linear decay to zero, warmup-stable-decay '
    'with a (1 - sqrt) cooldown, schedule-free SGD and warm-up + cosine. Tuning reads 5,000 '
    'training images held out; the final seeds train on all 60,000 and are read on the test '
    'split.')
# ResNet-8 with BN at batch 128 trains stably far higher than LeNet: the SGD grids double from
# 0.05 (1cycle from 0.1), schedule-free's from 0.25. The range test's first sweep, 0 -> 3 over
# 100 updates, gave no reading (validation accuracy under 24 % throughout: the net had not
# learned before the LR passed 1; kept as 1cycle_range.sweep_v1), so it sweeps 0 -> 1.5 over
# 200 updates, read every 8.
_CIFAR_ARMS = _arms(Arm('one_cycle', sweep_max_lr=1.5, sweep_steps=200, sweep_eval_every=8),
                    (0.1, 0.2, 0.4, 0.8), (0.05, 0.1, 0.2, 0.4), (0.25, 0.5, 1.0, 2.0))
_CIFAR_QUESTION = (
    'The same question where BN is in the network: the authors\' Caffe CIFAR ResNet at depth 8 '
    '(29,162 parameters) on a fixed draw of 10,000 CIFAR-10 training images (JPEG copy), batch '
    '128, 4 epochs (312 updates), the arms and tuning rules of the LeNet protocols (schedule-free '
    'recomputes BN statistics at its averaged point before each evaluation). Tuning reads 2,000 '
    'of the other 40,000 training images; the final seeds are read on the 10,000 test images.')
PROTOCOLS = {
    'lenet_1ep': Protocol('experiments/budget/lenet.py', 1, 5000, _LENET_ARMS, (0, 1, 2, 3, 4),
                          _LENET_QUESTION.format(epochs=1, steps=117), (0.75, 0.80, 0.83)),
    'lenet_3ep': Protocol('experiments/budget/lenet.py', 3, 5000, {**_LENET_ARMS, **_LENET_STABLE},
                          (0, 1, 2, 3, 4),
                          _LENET_QUESTION.format(epochs=3, steps=351), (0.85, 0.87, 0.88)),
    'lenet_12ep': Protocol('experiments/budget/lenet.py', 12, 5000,
                           {**_LENET_ARMS, **_LENET_STABLE}, (0, 1, 2),
                           _LENET_QUESTION.format(epochs=12, steps=1406), (0.88, 0.90, 0.91)),
    'cifar_4ep': Protocol('experiments/budget/cifar.py', 4, 2000, _CIFAR_ARMS, (0, 1, 2, 3, 4),
                          _CIFAR_QUESTION, (0.40, 0.50, 0.55),
                          data='the CIFAR-10 archive (cifar10-jpeg.tar.gz)'),
}


# ---------------------------------------------------------------------------------------------
# Running.


def _no_data(name: str, protocol: Protocol) -> str:
  return f'{name} reads {protocol.data}: name it with --data PATH'


def _command(name: str, protocol: Protocol) -> str:
  return f'python -m experiments.budget.study run {name}' + (' --data PATH' if protocol.data
                                                             else '')


def _holder(seed_dir: str) -> int | None:
  """The pid of another live process holding `seed_dir`'s workdir lock, else None."""
  lock = _read(os.path.join(seed_dir, 'superconv.lock')) or {}
  pid = lock.get('pid')
  if not isinstance(pid, int) or pid == os.getpid():
    return None
  try:
    os.kill(pid, 0)
  except OSError:
    return None
  return pid


def _run(protocol: Protocol, name: str, arm: str, args: str, seed: int, sets: Sequence[str],
         root: str, data: str = '') -> dict:
  # Several workers may share a protocol (e.g. one walking the grid backwards): a run another
  # live worker holds is waited for, then read, not started twice.
  seed_dir = os.path.join(root, name, arm, f'seed{seed}')
  while _holder(seed_dir) is not None and not os.path.exists(
      os.path.join(seed_dir, 'summary.json')):
    time.sleep(10)
  # A finished seed is skipped, so it must be the run asked for: after a grid changed, the best
  # peak may differ from the one an earlier final seed ran with.
  held = _read(os.path.join(seed_dir, 'run.json'))
  if held and (held.get('args'), held.get('sets')) != (args, [*protocol.sets, *sets]):
    raise ValueError(f'{seed_dir} holds a run of {held.get("args")!r} {held.get("sets")}, not '
                     f'{args!r} {[*protocol.sets, *sets]}: move that folder aside to run this one')
  return run_lib.run_seed(os.path.join(ROOT, protocol.config), args, seed,
                          sets=[*protocol.sets, *sets],
                          data=data, root=root, command=_command(name, protocol),
                          keep_checkpoint=False, study=name, arm=arm)


class Preempted(Exception):
  """A run was interrupted (SIGTERM / SIGINT) and saved a checkpoint: the study stops there."""


def sweep_sets(protocol: Protocol, arm: Arm) -> list[str]:
  return ['mode=lr_range', 'lr_range.min_lr=0.0', f'lr_range.max_lr={arm.sweep_max_lr:g}',
          f'lr_range.num_steps={arm.sweep_steps}',
          f'lr_range.eval_every_steps={arm.sweep_eval_every}',
          'lr_range.eval_split=validation', f'lr_range.eval_examples={protocol.validation}',
          'lr_range.eval_seed=0']


def tune(protocol: Protocol, name: str, arm_name: str, root: str, reverse_grid: bool = False,
         data: str = '') -> tuple[str, list[str]] | None:
  """Runs (or reads) the arm's tuning; returns the final runs' (args, sets), or None when a
  range test gave no reliable reading (the arm then has nothing to run)."""
  arm = protocol.arms[arm_name]
  if arm.range_tested:
    if _run(protocol, name, f'{arm_name}.sweep', protocol.args(arm, tuning=False), 0,
            sweep_sets(protocol, arm), root, data).get('preempted'):
      raise Preempted()
    sweep = _read(os.path.join(root, name, f'{arm_name}.sweep', 'seed0', 'summary.json')) or {}
    if not (sweep.get('suggestion') or {}).get('reliable', False):
      print(f'[study] {name}/{arm_name}: the range test gave no reliable reading; the arm has '
            'no LR to run (a result: its report row says so).', flush=True)
      return None
    result = os.path.relpath(os.path.join(root, name, f'{arm_name}.sweep', 'seed0',
                                          'lr_range.json'), ROOT)
    return protocol.args(arm), [f'lr_range_result={result}']
  scores = {}
  grid_arm = arm.grid_of or arm_name
  order = arm.grid[::-1] if reverse_grid else arm.grid
  for peak in order:  # first the points no other worker holds, then (waiting) the rest
    if _holder(os.path.join(root, name, f'{grid_arm}.p{peak:g}', 'seed0')) is None:
      if _run(protocol, name, f'{grid_arm}.p{peak:g}', protocol.args(arm, peak, True), 0, [],
              root, data).get('preempted'):
        raise Preempted()
  for peak in order:
    summary = _run(protocol, name, f'{grid_arm}.p{peak:g}', protocol.args(arm, peak, True), 0,
                   [], root, data)
    if summary.get('preempted'):
      raise Preempted()
    scores[peak] = summary.get('final_eval_accuracy')
  return protocol.args(arm, best_peak(scores, arm.rule)), []


def best_peak(scores: dict[float, float | None], rule: str = 'best') -> float:
  """The peak with the highest validation accuracy (a diverged run scores nothing); with
  rule='stable', the best of the peaks below the lowest one that diverged.

  Examples:
    >>> best_peak({0.01: 0.8, 0.02: 0.85, 0.04: None})
    0.02
    >>> best_peak({0.01: 0.8, 0.02: 0.85, 0.04: None, 0.08: 0.9})
    0.08
    >>> best_peak({0.01: 0.8, 0.02: 0.85, 0.04: None, 0.08: 0.9}, rule='stable')
    0.02
  """
  if rule not in ('best', 'stable'):
    raise ValueError(f"unknown grid rule {rule!r}; valid: 'best', 'stable'")
  failed = [p for p, s in scores.items() if s is None or not math.isfinite(s)]
  if rule == 'stable' and failed:
    scores = {p: s for p, s in scores.items() if p < min(failed)}
  ok = {p: s for p, s in scores.items() if s is not None and math.isfinite(s)}
  if not ok:
    raise RuntimeError(f'every tuning run diverged: {scores}')
  return max(sorted(ok), key=lambda p: ok[p])


def run_protocol(name: str, arms: Sequence[str] = (), seeds: Sequence[int] = (),
                 root: str = run_lib.RESULTS, protocols: dict | None = None,
                 reverse_grid: bool = False, data: str = '') -> None:
  """Tunes each arm, then runs its final seeds: the first three of every arm before the rest.

  `data` is the local data set of a protocol that names one (`Protocol.data`).
  """
  protocol = (protocols or PROTOCOLS)[name]
  if protocol.data and not data:
    raise ValueError(_no_data(name, protocol))
  arms = list(arms or protocol.arms)
  seeds = list(seeds or protocol.seeds)
  _write_manifest_header(protocol, name, root)  # before any run: a committed part reads right
  finals = {}
  try:
    for phase in (seeds[:3], seeds[3:]):
      for arm_name in arms:
        if arm_name not in finals:
          finals[arm_name] = tune(protocol, name, arm_name, root, reverse_grid, data)
        if finals[arm_name] is None or _shares_runs(protocol, arm_name, finals, name, root,
                                                    reverse_grid, data):
          continue
        args, sets = finals[arm_name]
        for seed in phase:
          if _run(protocol, name, arm_name, args, seed, sets, root, data).get('preempted'):
            raise Preempted()
  except Preempted:
    print('[study] preempted: run the same command again to resume.', flush=True)


def _shares_runs(protocol: Protocol, arm_name: str, finals: dict, name: str, root: str,
                 reverse_grid: bool, data: str) -> bool:
  """Whether an arm on another arm's grid picked that arm's setting: its final runs would be
  the same runs, so it reads that arm's (`collect_protocol`) instead of repeating them."""
  base = protocol.arms[arm_name].grid_of
  if not base or base == arm_name:
    return False
  if base not in finals:  # e.g. `--arms linear_stable` alone: the grid runs are read, not rerun
    finals[base] = tune(protocol, name, base, root, reverse_grid, data)
  if finals[base] != finals[arm_name]:
    return False
  print(f'[study] {name}/{arm_name}: picks the setting {base} picked; its runs are '
        f"{base}'s.", flush=True)
  return True


def _write_manifest_header(protocol: Protocol, name: str, root: str) -> None:
  """The study's question and command in its manifest.json (arms are added by each run)."""
  path = os.path.join(root, name, collect.MANIFEST)
  manifest = _read(path) or {'study': name, 'arms': {}}
  manifest = {'study': name, 'question': protocol.question, 'command': _command(name, protocol),
              'arms': manifest.get('arms', {})}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(json.dumps(manifest, indent=1) + '\n')


# ---------------------------------------------------------------------------------------------
# Statistics.


def welch(a: Sequence[float], b: Sequence[float]) -> dict:
  """Welch's unequal-variance t-test of mean(a) = mean(b): t, degrees of freedom, two-sided p.

  p = I_{df / (df + t^2)}(df / 2, 1 / 2), the regularized incomplete beta function (the
  Student-t tail), from `jax.scipy.special.betainc` (so no SciPy is needed).

  Examples:
    >>> r = welch([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0, 7.0])
    >>> round(r['t'], 4), round(r['df'], 3), round(r['p'], 4)
    (-2.6112, 6.981, 0.0349)
  """
  from jax.scipy import special  # pylint: disable=g-import-not-at-top
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 2 or len(b) < 2:
    return {'t': None, 'df': None, 'p': None}
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  if va + vb == 0:
    return {'t': None, 'df': None, 'p': 1.0 if a.mean() == b.mean() else 0.0}
  t = (a.mean() - b.mean()) / math.sqrt(va + vb)
  df = (va + vb)**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
  p = float(special.betainc(df / 2, 0.5, df / (df + t * t)))
  return {'t': float(t), 'df': float(df), 'p': p}


def verdict(arm: list[float], reference: list[float], alpha: float = 0.05) -> str:
  """'wins' / 'loses' against the reference when Welch's p < alpha, else 'ties'."""
  p = welch(arm, reference)['p']
  if p is None or p >= alpha:
    return 'ties'
  return 'wins' if np.mean(arm) > np.mean(reference) else 'loses'


# ---------------------------------------------------------------------------------------------
# Reading the results.


def _read(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _rows(seed_dir: str) -> list[dict]:
  try:
    with open(os.path.join(seed_dir, 'metrics.jsonl')) as f:
      return [json.loads(line) for line in f if line.strip()]
  except OSError:
    return []


def curve(seed_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(updates, training seconds, test accuracy) at each evaluation of a final seed.

  Seconds are training time only (compile and evaluation excluded): each log row covers the
  updates since the previous row at its measured `images_per_sec`.
  """
  rows = _rows(seed_dir)
  steps, secs, accs = [], [], []
  t, prev, batch = 0.0, 0, None
  run = _read(os.path.join(seed_dir, 'run.json')) or {}
  batch = (run.get('config') or {}).get('batch_size', 0)
  for r in rows:
    if r.get('images_per_sec'):
      t += (r['step'] - prev) * batch / r['images_per_sec']
      prev = r['step']
    if 'eval_accuracy' in r:
      steps.append(r['step'])
      secs.append(t)
      accs.append(r['eval_accuracy'])
  return np.asarray(steps), np.asarray(secs), np.asarray(accs)


def _cost(summary: dict | None) -> tuple[int, float]:
  """(updates, wall seconds) a finished run or sweep spent."""
  if not summary:
    return 0, 0.0
  return int(summary.get('steps') or 0), float(summary.get('wall_seconds') or 0.0)


def collect_protocol(name: str, root: str = run_lib.RESULTS, protocols: dict | None = None
                     ) -> dict:
  """Everything the report states about one protocol, from its results folder only."""
  protocol = (protocols or PROTOCOLS)[name]
  study = os.path.join(root, name)
  out = {'protocol': name, 'epochs': protocol.epochs, 'arms': {}}
  for arm_name, arm in protocol.arms.items():
    tuning, tune_updates, tune_seconds = {}, 0, 0.0
    if arm.range_tested:
      sweep = _read(os.path.join(study, f'{arm_name}.sweep', 'seed0', 'summary.json'))
      if sweep:
        tune_updates, tune_seconds = _cost(sweep)
        tuning = {'suggested_max_lr': (sweep.get('suggestion') or {}).get('max_lr'),
                  'reliable': (sweep.get('suggestion') or {}).get('reliable', True)}
      complete = sweep is not None
    else:
      complete = True
      grid_arm = arm.grid_of or arm_name
      for peak in arm.grid:
        s = _read(os.path.join(study, f'{grid_arm}.p{peak:g}', 'seed0', 'summary.json'))
        complete &= s is not None
        if s:
          u, w = _cost(s)
          if s.get('diverged'):  # a diverged run's updates are unknown: count the budget
            u = int((_read(os.path.join(study, f'{grid_arm}.p{peak:g}', 'seed0', 'run.json'))
                     or {}).get('config', {}).get('num_steps', 0))
          tune_updates += u
          tune_seconds += w
        if s:  # a diverged point is None; a point not run yet is absent
          tuning[f'{peak:g}'] = None if s.get('diverged') else s.get('final_eval_accuracy')
    runs = _runs_of(arm_name, arm, tuning, complete, study)
    finals, curves, peak_lr = {}, [], None
    for d in sorted(os.listdir(os.path.join(study, runs))) if os.path.isdir(
        os.path.join(study, runs)) else []:
      s = _read(os.path.join(study, runs, d, 'summary.json'))
      if not s or not d.startswith('seed'):
        continue
      cfg = (_read(os.path.join(study, runs, d, 'config.json')) or {})
      peak_lr = (cfg.get('schedule') or {}).get('max_lr', peak_lr)
      u, w = _cost(s)
      if s.get('diverged'):  # its summary has no count: the budget it was given
        u = int(((_read(os.path.join(study, runs, d, 'run.json')) or {}).get('config') or {})
                .get('num_steps', 0))
      finals[int(d[4:])] = {'accuracy': None if s.get('diverged') else
                            s.get('final_eval_accuracy'), 'updates': u, 'seconds': w,
                            'train_seconds': s.get('train_seconds')}
      curves.append(curve(os.path.join(study, runs, d)))
    # A diverged seed is a failed run of the arm: it scores chance (its NaN weights predict one
    # class), so the arm's mean and its test carry the failure instead of dropping it.
    accs = [CHANCE if f['accuracy'] is None else f['accuracy'] for f in finals.values()]
    finished = [f['accuracy'] for f in finals.values() if f['accuracy'] is not None]
    run_updates = int(np.mean([f['updates'] for f in finals.values()])) if finals else 0
    run_seconds = float(np.mean([f['seconds'] for f in finals.values()])) if finals else 0.0
    to_target = {}
    for target in protocol.targets:
      ups, secs = [], []
      for steps, sec, acc in curves:
        hit = np.flatnonzero(acc >= target)
        ups.append(int(steps[hit[0]]) if hit.size else None)
        secs.append(float(sec[hit[0]]) if hit.size else None)
      reached = [u for u in ups if u is not None]
      to_target[f'{target:g}'] = {
          'reached': len(reached), 'of': len(ups),
          'median_updates': float(np.median(reached)) if len(reached) * 2 > len(ups) else None,
          'median_seconds': (float(np.median([s for s in secs if s is not None]))
                             if len(reached) * 2 > len(ups) else None)}
    out['arms'][arm_name] = {
        'schedule': arm.schedule, 'grid': list(arm.grid), 'tuning': tuning,
        'grid_of': arm.grid_of, 'rule': arm.rule, 'runs_of': runs,
        'tuning_complete': complete,
        'range_tested': arm.range_tested, 'peak_lr': peak_lr,
        'tuning_updates': tune_updates, 'tuning_seconds': tune_seconds,
        'run_updates': run_updates, 'run_seconds': run_seconds,
        'seeds': sorted(finals), 'accuracies': accs,
        'mean_of_finished': float(np.mean(finished)) if finished else None,
        'mean': float(np.mean(accs)) if accs else None,
        'std': float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
        'diverged_seeds': sum(f['accuracy'] is None for f in finals.values()),
        'to_target': to_target,
        'total_updates': tune_updates + run_updates * max(len(finals), 1),
        'total_seconds': tune_seconds + sum(f['seconds'] for f in finals.values()),
    }
  ref = out['arms'].get(REFERENCE, {}).get('accuracies', [])
  for arm_name, a in out['arms'].items():
    if arm_name != REFERENCE and len(a['accuracies']) > 1 and len(ref) > 1:
      a['vs_reference'] = {**welch(a['accuracies'], ref),
                           'verdict': verdict(a['accuracies'], ref)}
  return out


def _runs_of(arm_name: str, arm: Arm, tuning: dict, complete: bool, study: str) -> str:
  """The folder of the arm's final seeds: its own, or, for an arm on another arm's grid whose
  rule picked that arm's peak (`_shares_runs`), that arm's."""
  if not arm.grid_of or os.path.isdir(os.path.join(study, arm_name)) or not complete:
    return arm_name
  scores = {float(p): s for p, s in tuning.items()}
  try:
    same = best_peak(scores, arm.rule) == best_peak(scores)
  except RuntimeError:  # every grid point diverged: neither arm has a setting
    return arm_name
  return arm.grid_of if same else arm_name


def plot_protocol(name: str, data: dict, root: str = run_lib.RESULTS) -> str:
  """accuracy vs updates and vs training seconds, mean ± std over seeds per arm, as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  study = os.path.join(root, name)
  lo = 100.0  # percent
  for arm_name, a in data['arms'].items():
    if a.get('runs_of', arm_name) != arm_name:
      continue  # the same runs as another arm's line, which names it
    runs = [curve(os.path.join(study, arm_name, f'seed{s}'))
            for s in a['seeds']
            if not (_read(os.path.join(study, arm_name, f'seed{s}', 'summary.json')) or {}
                    ).get('diverged')]
    runs = [r for r in runs if len(r[0])]
    if not runs:
      continue
    n = min(len(r[0]) for r in runs)
    steps = runs[0][0][:n]
    secs = np.mean([r[1][:n] for r in runs], axis=0)
    acc = np.asarray([r[2][:n] for r in runs]) * 100
    mean, std = acc.mean(0), acc.std(0)
    lo = min(lo, float(np.percentile(mean, 30)))
    diverged = a['diverged_seeds']
    also = [n for n, b in data['arms'].items() if n != arm_name and b.get('runs_of') == arm_name]
    label = (' = '.join([arm_name, *also]) + f" ({len(runs)} seed{'s' if len(runs) > 1 else ''}"
             + (f', {diverged} diverged)' if diverged else ')'))
    for ax, x in zip(axes, (steps, secs)):
      line, = ax.plot(x, mean, label=label)
      ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
  for ax, xl in zip(axes, ('updates', 'training seconds (this 2-core CPU, shared)')):
    ax.set_xlabel(xl)
    ax.set_ylabel('test accuracy (%)')
    ax.set_ylim(max(lo - 2, 0), None)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, loc='lower right')
  fig.suptitle(f'{name}: final seeds, mean ± std')
  fig.tight_layout()
  path = os.path.join(study, 'curves.png')
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ---------------------------------------------------------------------------------------------
# The report.


def _pct(x, nd=2):
  return '—' if x is None else f'{100 * x:.{nd}f}'


def report_block(data: dict) -> str:
  """The markdown of one protocol's results (docs/baselines.md's generated block)."""
  name = data['protocol']
  arms = data['arms']
  epochs = f'{data["epochs"]:g} epoch' + ('' if data['epochs'] == 1 else 's')
  updates = max(a['run_updates'] for a in arms.values())
  budget = (f'{epochs}, {updates} updates per run' if updates else
            f'{epochs}; tuning under way, no final seed yet')
  lines = [f'**{name}** ({budget}; test accuracy of the final seeds, %; seconds are wall time '
           'on the shared CPU)', '',
           '| arm | tuned peak LR | test accuracy | seeds | vs 1cycle_range (Welch) | '
           'tuning updates | tuning s | run updates | total updates | total s |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for arm_name, a in arms.items():
    acc = (f"{_pct(a['mean'])} ± {_pct(a['std'])}" if a['std'] is not None else _pct(a['mean']))
    if a['diverged_seeds']:
      acc += (f" ({a['diverged_seeds']} of {len(a['seeds'])} diverged, scored {_pct(CHANCE, 0)};"
              f" the others {_pct(a['mean_of_finished'])})")
    vs = a.get('vs_reference')
    vs_text = ('reference' if arm_name == REFERENCE else
               '—' if not vs else f"{vs['verdict']} (p = {vs['p']:.3g})" if vs['p'] is not None
               else vs['verdict'])
    peak = '—' if a['peak_lr'] is None else f"{a['peak_lr']:.4g}"
    if a['range_tested']:
      peak += ' (range test)'
    lines.append(f"| {arm_name} | {peak} | {acc} | {len(a['seeds'])} | {vs_text} | "
                 f"{a['tuning_updates']:,} | {a['tuning_seconds']:.0f} | {a['run_updates']:,} | "
                 f"{a['total_updates']:,} | {a['total_seconds']:.0f} |")
  lines += ['', 'Tuning (validation accuracy %, one seed each; a diverged point counts its whole '
            'budget of updates):', '']
  for arm_name, a in arms.items():
    if a['range_tested']:
      t = a['tuning']
      lines.append(f"- {arm_name}: range test suggested max LR "
                   f"{t.get('suggested_max_lr', float('nan')):.4g}"
                   f"{'' if t.get('reliable', True) else ' (unreliable)'}")
    else:
      cells = [f'{p}: ' + (_pct(a['tuning'][p], 1) if a['tuning'].get(p) is not None else
                           'diverged' if p in a['tuning'] else 'not run')
               for p in (f'{x:g}' for x in a['grid'])]
      how = ('' if not a.get('grid_of') and a.get('rule', 'best') == 'best' else
             f"{a.get('grid_of') or arm_name}'s grid, rule '{a.get('rule', 'best')}' (the best "
             'peak below the lowest diverged one): ' if a.get('rule') == 'stable' else
             f"{a['grid_of']}'s grid: ")
      same = (f"; the peak {a['runs_of']} picked, so its final runs are {a['runs_of']}'s"
              if a.get('runs_of', arm_name) != arm_name else '')
      lines.append(f"- {arm_name}: {how}" + ', '.join(cells) + same)
  targets = list(next(iter(arms.values()))['to_target'])
  lines += ['', 'Updates / training seconds to a test accuracy (median over seeds; — when under '
            'half the seeds reach it):', '',
            '| arm | ' + ' | '.join(f'{100 * float(t):g} %' for t in targets) + ' |',
            '|---|' + '---|' * len(targets)]
  for arm_name, a in arms.items():
    cells = []
    for t in targets:
      r = a['to_target'][t]
      cells.append('—' if r['median_updates'] is None else
                   f"{r['median_updates']:.0f} / {r['median_seconds']:.0f} s "
                   f"({r['reached']}/{r['of']})")
    lines.append(f'| {arm_name} | ' + ' | '.join(cells) + ' |')
  lines += ['', f'![{name}](../experiments/results/{name}/curves.png)', '']
  return '\n'.join(lines) + '\n'


def rebuild_manifest(protocol: Protocol, name: str, root: str) -> dict:
  """manifest.json from the finished seeds' run.json (config, args, --sets, seed): workers
  that shared a protocol may have raced on it; the finished runs are the record."""
  study = os.path.join(root, name)
  arms = {}
  for arm in sorted(os.listdir(study)):
    if not os.path.isdir(os.path.join(study, arm)):
      continue
    for d in sorted(os.listdir(os.path.join(study, arm))):
      info = _read(os.path.join(study, arm, d, 'run.json'))
      if not info or not os.path.exists(os.path.join(study, arm, d, 'summary.json')):
        continue
      spec = arms.setdefault(arm, {'config': info['config_file'], 'args': info['args'],
                                   'set': info['sets'], 'seeds': []})
      spec['seeds'] = sorted(spec['seeds'] + [int(info['seed'])])
  manifest = {'study': name, 'question': protocol.question, 'command': _command(name, protocol),
              'arms': arms}
  with open(os.path.join(study, collect.MANIFEST), 'w') as f:
    f.write(json.dumps(manifest, indent=1) + '\n')
  return manifest


def report(root: str = run_lib.RESULTS, doc: str = DOC, protocols: dict | None = None,
           names: Sequence[str] = ()) -> dict:
  """Writes each protocol with results (or those `names`): study.json, curves.png, and its
  docs block."""
  out = {}
  for name in names or (protocols or PROTOCOLS):
    if not os.path.isdir(os.path.join(root, name)):
      continue
    rebuild_manifest((protocols or PROTOCOLS)[name], name, root)
    data = collect_protocol(name, root, protocols)
    out[name] = data
    with open(os.path.join(root, name, 'study.json'), 'w') as f:
      f.write(json.dumps(data, indent=1) + '\n')
    plot_protocol(name, data, root)
    if doc:
      collect.write_block(doc, f'budget_{name}', report_block(data))
  return out


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m experiments.budget.study', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='cmd', required=True)
  r = sub.add_parser('run', help='tune and run the arms of a protocol (resumable)')
  r.add_argument('protocol', choices=sorted(PROTOCOLS))
  r.add_argument('--arms', nargs='+', default=[])
  r.add_argument('--seeds', nargs='+', type=int, default=[])
  r.add_argument('--data', default='', metavar='PATH',
                 help="the protocol's local data set, where it names one (cifar_4ep: the "
                 'CIFAR-10 archive)')
  r.add_argument('--reverse-grid', action='store_true',
                 help='walk the grids from the largest peak (a second worker on the same arms)')
  rep = sub.add_parser('report', help='study.json, curves.png and docs/baselines.md from the '
                       'results')
  # No `choices` here: argparse checks an empty nargs='*' list against them and refuses it.
  rep.add_argument('protocols', nargs='*', default=[],
                   help=f'default: every protocol with results ({", ".join(sorted(PROTOCOLS))})')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  from superconv import platform  # pylint: disable=g-import-not-at-top
  platform.apply_cpu_defaults()  # before JAX starts its backends, as superconv.main does
  ns = _parser().parse_args(argv)
  if ns.cmd == 'report':
    unknown = set(ns.protocols) - set(PROTOCOLS)
    if unknown:
      print(f'superconv: unknown protocol(s) {sorted(unknown)}; valid: '
            f'{", ".join(sorted(PROTOCOLS))}', file=sys.stderr)
      return 2
    report(names=ns.protocols)
  else:
    unknown = set(ns.arms) - set(PROTOCOLS[ns.protocol].arms)
    if unknown:
      print(f'superconv: unknown arm(s) {sorted(unknown)}; {ns.protocol} has '
            f'{sorted(PROTOCOLS[ns.protocol].arms)}', file=sys.stderr)
      return 2
    protocol = PROTOCOLS[ns.protocol]
    if protocol.data and not ns.data:
      print(f'superconv: {_no_data(ns.protocol, protocol)}', file=sys.stderr)
      return 2
    if ns.data and not os.path.exists(ns.data):
      print(f'superconv: --data {ns.data}: no such file or folder', file=sys.stderr)
      return 2
    run_protocol(ns.protocol, ns.arms, ns.seeds, reverse_grid=ns.reverse_grid,
                 data=ns.data)
  return 0


if __name__ == '__main__':
  sys.exit(main())
