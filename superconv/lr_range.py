r"""The LR range test (Smith 2017; Smith & Topin 2017, Sec. 3 and Fig. 2) and its reading rules.

The test: train for a short run while the learning rate rises from `min_lr` to `max_lr`
(linearly, as the paper's Fig. 2 sweeps, or exponentially), evaluate on held-out data every k
updates, and read the bounds of a cyclical schedule off the curves.

  python -m superconv.main --config=configs/resnet56_lr_range.py --workdir=/tmp/range
  python -m superconv.main --config=configs/resnet56.py --config.mode=lr_range --workdir=/tmp/r

Any config runs as a range test: `run` sets schedule.name = 'lr_range' and num_steps =
lr_range.num_steps (config.lr_range.{min_lr, max_lr, num_steps, mode, eval_every_steps, ...});
model, data, optimizer, momentum, weight decay and devices are the training run's.

What is recorded (conventions):
  * update s (s = 0 .. n-1) uses lr_s = schedule(s); its training loss is the loss of batch s,
    computed before the update (the pair (lr_s, loss_s), as in fastai's finder);
  * the evaluation after s updates is paired with schedule(s) (Caffe's "Iteration s, Testing"
    line and its lr; the last one is max_lr). The first evaluation is at s = 0, the untrained
    net, so the rise of the accuracy is measured from its start.
  * per-update losses: the sweep dispatches one update per call (`train.make_train_fn` with
    steps_per_call = 1) and moves each update's loss out of `state.sums` with a small donated
    jitted function. Losses stay on the device and are fetched only at evaluation points, so
    dispatch stays asynchronous; the cost is ~1 ms of host time per update, hidden behind the
    device for any real model.

Reading the accuracy curve (`suggest`), the paper's rule (digest §3.2):
  1. Smooth the test accuracy with a centered moving median over `window` evaluations (see
     `smooth_accuracy` for the ends). Real range tests are noisy: ResNet-56 curves jump by
     10-20 points between neighbouring evaluations (digest §6.2), and a median ignores single
     outliers where a mean is dragged by them.
  2. tolerance = max(atol, rtol * (max smoothed accuracy - min raw accuracy)): a fall must be a
     sizeable fraction of the curve's own rise, so noise on a flat curve is not a fall.
  3. "Falls" at the first evaluation whose smoothed accuracy is more than `tolerance` below its
     running maximum. max_lr = the LR of the smoothed peak before that point (rule 'peak', the
     paper's Fig. 2a reading) or the last LR before the fall (rule 'fall', 1803.09820's "when the
     accuracy starts to fall"). min_lr = max_lr / lr_range.min_lr_div_clr for CLR (paper: 3-4)
     and max_lr / lr_range.min_lr_div_1cycle for 1cycle (1803.09820: ~10).
  4. Never falls: `flat=True`, "accuracy never fell: the super-convergence sign" (Fig. 2b:
     ResNet-56 stays high up to LR 3). max_lr = the largest LR tested (`flat_rule='largest'`, as
     the paper's CLR 0.1-3 after its 0-3 sweep) or the smoothed peak (`flat_rule='peak'`).

Beside it, a loss-based reading (`suggest_from_loss`, as fastai's finder): the training loss is
smoothed by a bias-corrected EMA,

  avg_t = beta avg_{t-1} + (1 - beta) loss_t,   smoothed_t = avg_t / (1 - beta^t),

the steepest descent of the smoothed loss against log LR (before its minimum), the middle of the
longest descending run ("valley"), and the LR of the minimum. The sweep stops early when the
smoothed loss exceeds lr_range.diverge_factor x its best so far, or is not finite; it then ends
normally and records `diverged_at`.

Failure modes (read the plot, not only the numbers):
  * Too short a sweep: the accuracy has not risen when the LR is already large, so the curve
    reads the training progress, not the LR; the peak moves with the sweep length (Fig. 2b:
    5k/20k/100k). When the smoothed accuracy never rises by `atol` the suggestion is marked
    `reliable=False` and `apply_suggestion` refuses it.
  * Flat curves give no upper bound: max_lr is then only a lower bound on the true limit.
  * Noise wider than the window (a run of bad evaluations) reads as a fall; raise `window`.
  * A linear sweep spends few updates at small LRs, so the loss-based readings, defined on a log
    LR axis, are coarse below ~max_lr/100. With BN the loss often falls until the sweep ends and
    the steepest point sits at the start; the accuracy reading is the paper's and the primary one.
  * The LR of a momentum optimizer acts with a lag of about 1/(1 - momentum) updates.
  * On an easy task the best smoothed loss nears 0 and "4 x best" is reached by mere noise;
    raise lr_range.diverge_factor or set it to 0 (then only a non-finite loss stops the sweep).

Python API for a user's own Flax model, optax optimizer and data: `range_test(...)`. It works
on copies and never donates the caller's buffers. `apply_suggestion(config)` feeds a saved
suggestion (config.lr_range_result = 'path/lr_range.json') into a CLR or 1cycle config.

Artifacts of `run`: workdir/lr_range.json (every per-update LR and loss, raw and smoothed; every
evaluation; the suggestion and its method; diverged_at; provenance), workdir/lr_range.png, and a
one-line summary on stdout.
"""

from __future__ import annotations

import dataclasses
import json
import contextlib
import itertools
import math
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from superconv import metrics as metrics_lib
from superconv import optim
from superconv import schedules
from superconv import train

__all__ = ['RangeTestResult', 'apply_suggestion', 'divergence_step', 'range_config',
           'range_test', 'run', 'smooth_accuracy', 'smooth_loss', 'suggest', 'suggest_from_loss']

RESULT_FILE = 'lr_range.json'
PLOT_FILE = 'lr_range.png'


# ----------------------------------------------------------------------------------------------
# Reading the curves (numpy only)


def _breaks(smoothed: float, best: float, factor: float) -> bool:
  """The divergence rule: the smoothed loss is not finite, or above factor x its best so far
  (factor 0: no ratio test)."""
  return not math.isfinite(smoothed) or bool(factor) and smoothed > factor * best


class _LossWatch:
  """Bias-corrected EMA of the training loss and the divergence rule, fed one loss at a time."""

  def __init__(self, beta: float, diverge_factor: float):
    if not 0.0 <= beta < 1.0:
      raise ValueError(f'smoothing must be in [0, 1), got {beta!r}')
    if diverge_factor != 0 and not diverge_factor > 1.0:
      raise ValueError(f'diverge_factor must be 0 (never stop) or > 1, got {diverge_factor!r}')
    self.beta, self.factor = float(beta), float(diverge_factor)
    self._avg, self._t = 0.0, 0
    self.best = math.inf
    self.diverged_at: int | None = None
    self.reason = ''

  def push(self, loss: float) -> float:
    """Adds the loss of the next update; returns its smoothed value."""
    self._avg = self.beta * self._avg + (1.0 - self.beta) * float(loss)
    self._t += 1
    smoothed = self._avg / (1.0 - self.beta ** self._t)
    step = self._t - 1
    if self.diverged_at is None:
      if _breaks(smoothed, self.best, self.factor):
        self.diverged_at = step
        self.reason = (f'the training loss became {loss} at update {step}'
                       if not math.isfinite(smoothed) else
                       f'the smoothed training loss {smoothed:.4g} exceeded {self.factor:g} x its '
                       f'best {self.best:.4g} at update {step}')
      self.best = min(self.best, smoothed)
    return smoothed


def smooth_loss(losses: Sequence[float], beta: float = 0.98) -> np.ndarray:
  r"""Bias-corrected exponential moving average of per-update losses.

  avg_t = beta avg_{t-1} + (1 - beta) x_t (avg_0 = 0), smoothed_t = avg_t / (1 - beta^t), so the
  first value is x_1 and a constant series stays constant. A non-finite loss makes every later
  value non-finite.

  Examples:
    >>> smooth_loss([2.0, 2.0, 2.0], 0.9).tolist()
    [2.0, 2.0, 2.0]
    >>> smooth_loss([1.0, 3.0], 0.5).round(4).tolist()  # (0.25 + 1.5) / 0.75
    [1.0, 2.3333]
  """
  watch = _LossWatch(beta, 0.0)
  return np.asarray([watch.push(x) for x in losses], np.float64)


def divergence_step(smoothed: Sequence[float], factor: float) -> int | None:
  """First index where the smoothed loss is not finite or exceeds factor x its minimum so far.

  `factor` 0 disables the ratio test (a non-finite loss still counts). None if it never happens.

  Examples:
    >>> divergence_step([2.0, 1.0, 1.5, 3.9], 4.0) is None, divergence_step([2.0, 1.0, 4.5], 4.0)
    (True, 2)
    >>> divergence_step([1.0, float('nan')], 0.0)
    1
  """
  best = math.inf
  for i, s in enumerate(smoothed):
    if _breaks(s, best, factor):
      return i
    best = min(best, s)
  return None


def smooth_accuracy(accuracy: Sequence[float], window: int = 5) -> np.ndarray:
  """Centered moving median over `window` evaluations (odd; an even one acts as window + 1).

  At the start the window shrinks symmetrically, so the first value is the first evaluation:
  that is the untrained net, exact, and the curve rises steeply there (a clipped window would
  lift it with later, trained values). At the end the window is clipped instead: the last
  evaluations are the noisiest, and a single one must not decide whether the curve fell.

  Examples:
    >>> smooth_accuracy([0.1, 0.5, 0.9, 0.2, 0.9, 0.9], 3).tolist()  # the 0.2 dip is ignored
    [0.1, 0.5, 0.5, 0.9, 0.9, 0.9]
  """
  a = np.asarray(accuracy, np.float64)
  if window < 1:
    raise ValueError(f'window must be >= 1, got {window}')
  h = window // 2
  return np.asarray([np.median(a[i - min(h, i):i + min(h, i) + 1 if i < h else i + h + 1])
                     for i in range(len(a))])


def suggest(lrs: Sequence[float], accuracy: Sequence[float], *, window: int = 5,
            atol: float = 0.02, rtol: float = 0.2, rule: str = 'peak',
            flat_rule: str = 'largest', min_lr_div_clr: float = 4.0,
            min_lr_div_1cycle: float = 10.0, stop_lr: float | None = None) -> dict[str, Any]:
  r"""Reads max_lr (and min_lr) off a range test's test-accuracy curve; see the module docstring.

  Args:
    lrs: LR of each evaluation, increasing.
    accuracy: test accuracy (fraction) at each evaluation.
    window: evaluations in the centered moving median.
    atol, rtol: a fall is a drop below the running maximum of more than
      max(atol, rtol * (max smoothed - min raw accuracy)).
    rule: 'peak' (max_lr = LR of the smoothed peak) | 'fall' (the last LR before the fall).
    flat_rule: for a curve that never falls: 'largest' (the largest LR tested) | 'peak'.
    min_lr_div_clr, min_lr_div_1cycle: min_lr = max_lr / these.
    stop_lr: the LR at which the training loss diverged and the sweep stopped (None: it did
      not). Evaluations at or past it count as fallen even if the median hides the collapse (a
      single collapsed point at the end of the curve is an outlier to a median): a curve cut
      short by divergence is never 'flat'.

  Returns:
    {'max_lr', 'min_lr_clr', 'min_lr_1cycle', 'method' (short label), 'explanation' (a
     sentence), 'flat', 'reliable', 'peak_lr', 'peak_accuracy' (smoothed), 'fall_lr' (last LR
     before the fall, or None), 'tolerance', 'window'}.

  Examples:
    >>> lrs = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    >>> s = suggest(lrs, [0.1, 0.6, 0.8, 0.7, 0.3, 0.1, 0.1], window=1)
    >>> s['max_lr'], s['min_lr_clr'], s['flat'], s['method']
    (1.0, 0.25, False, 'peak')
    >>> s = suggest(lrs, [0.1, 0.6, 0.8, 0.82, 0.8, 0.81, 0.83], window=3)
    >>> s['max_lr'], s['flat'], s['method']
    (3.0, True, 'flat-largest')
  """
  if rule not in ('peak', 'fall'):
    raise ValueError(f"rule must be 'peak' or 'fall', got {rule!r}")
  if flat_rule not in ('largest', 'peak'):
    raise ValueError(f"flat_rule must be 'largest' or 'peak', got {flat_rule!r}")
  lr = np.asarray(lrs, np.float64)
  raw = np.nan_to_num(np.asarray(accuracy, np.float64), nan=0.0)
  if lr.shape != raw.shape or lr.ndim != 1 or not len(lr):
    raise ValueError(f'lrs and accuracy must be equal-length non-empty 1-D sequences, got '
                     f'{lr.shape} and {raw.shape}')
  if np.any(np.diff(lr) < 0):
    raise ValueError('lrs must be non-decreasing (evaluations in sweep order)')
  s = smooth_accuracy(raw, window)
  running = np.maximum.accumulate(s)
  tol = max(atol, rtol * (s.max() - raw.min()))
  fallen = running - s > tol
  if stop_lr is not None:
    fallen |= lr >= stop_lr
  fall = int(np.argmax(fallen)) if fallen.any() else None
  if fall == 0:  # Diverged before the first evaluation after the start: nothing to read.
    fall = None
    stop_lr = stop_lr if stop_lr is not None else float(lr[0])
  upto = len(s) if fall is None else fall
  peak = int(np.argmax(s[:upto]))
  # A median turns a sharp peak into a plateau of equal values: take the plateau's middle.
  end = peak
  while end + 1 < upto and s[end + 1] == s[peak]:
    end += 1
  peak = (peak + end) // 2
  out = {'peak_lr': float(lr[peak]), 'peak_accuracy': float(s[peak]),
         'fall_lr': None if fall is None else float(lr[fall - 1]), 'tolerance': float(tol),
         'window': int(window), 'flat': fall is None, 'reliable': True}
  med = f'centered median of {window} evals'
  if fall is None:
    if flat_rule == 'largest':
      max_lr, how = float(lr[-1]), 'max_lr = the largest LR tested, a lower bound on the limit'
    else:
      max_lr, how = float(lr[peak]), 'max_lr = the LR of the smoothed peak'
    method = f'flat-{flat_rule}'
    explanation = (f'accuracy never fell: the super-convergence sign (Smith & Topin 2017, Fig. '
                   f'2b). The smoothed accuracy ({med}) stayed within {tol:.3g} of its running '
                   f'maximum up to the largest LR tested, {lr[-1]:.4g}; {how}.')
  else:
    max_lr = float(lr[peak]) if rule == 'peak' else float(lr[fall - 1])
    method = rule
    if stop_lr is not None and lr[fall] >= stop_lr and running[fall] - s[fall] <= tol:
      how = f'the training loss diverged at LR {stop_lr:.4g}'
    else:
      how = f'it falls more than {tol:.3g} below its running maximum'
    explanation = (f'the smoothed accuracy ({med}) peaks at {s[peak]:.4f} at LR {lr[peak]:.4g} '
                   f'and {how} after LR {lr[fall - 1]:.4g}; max_lr = '
                   + ('the peak.' if rule == 'peak' else 'the last LR before the fall.'))
  # From the first evaluation itself (the untrained net, no noise to smooth): a clipped median
  # window at the start would mix in later, trained values.
  rise = s[:upto].max() - raw[0]
  if rise <= atol or upto < 3 or max_lr <= 0 or (fall is None and stop_lr is not None):
    out.update(reliable=False, flat=False)
    method = 'unreliable'
    if fall is None and stop_lr is not None:
      explanation = f'the training loss diverged at LR {stop_lr:.4g} before a second evaluation'
    elif rise <= atol or upto < 3:
      explanation = (f'the smoothed accuracy rose by only {rise:.3g} from its start over '
                     f'{upto} evaluations (needs > {atol:g} over >= 3)')
    else:
      explanation = 'the accuracy peaked at LR 0'
    explanation += ('; the curve gives no reading: lengthen the sweep, evaluate more often, or '
                    'check the LR range.')
  out.update(max_lr=max_lr, min_lr_clr=max_lr / min_lr_div_clr,
             min_lr_1cycle=max_lr / min_lr_div_1cycle, method=method, explanation=explanation)
  return out


def suggest_from_loss(lrs: Sequence[float], smoothed_loss: Sequence[float],
                      stop: int | None = None) -> dict[str, Any]:
  r"""Loss-based readings of a range test, for comparison with `suggest` (fastai-like).

  Uses the updates before `stop` (the divergence) with LR > 0 and a finite smoothed loss:

    steepest_lr  argmin of d(smoothed loss)/d(log lr), before the loss minimum;
    valley_lr    the middle update of the longest run of decreasing smoothed loss;
    min_loss_lr  the LR of the smallest smoothed loss (the edge of stability: too large).

  Returns:
    {'steepest_lr', 'valley_lr', 'min_loss_lr', 'method'}; the LRs are None when fewer than
    three usable points remain.

  Examples:
    >>> lrs = np.geomspace(1e-3, 1.0, 7)
    >>> loss = [2.0, 1.99, 1.9, 1.5, 1.0, 0.9, 3.0]
    >>> r = suggest_from_loss(lrs, loss)
    >>> round(r['steepest_lr'], 4), round(r['valley_lr'], 4), round(r['min_loss_lr'], 4)
    (0.0316, 0.01, 0.3162)
  """
  lr = np.asarray(lrs, np.float64)
  y = np.asarray(smoothed_loss, np.float64)
  n = min(len(lr), len(y), len(lr) if stop is None else stop)
  lr, y = lr[:n], y[:n]
  keep = (lr > 0) & np.isfinite(y)
  # Equal LRs (a sweep held at its end) have no slope: keep the first of each.
  keep &= np.concatenate([[True], np.diff(lr) > 0])
  lr, y = lr[keep], y[keep]
  method = ('steepest: most negative d(smoothed loss)/d(log lr) before the minimum; valley: '
            'middle of the longest decreasing run; min_loss: LR of the smallest smoothed loss')
  if len(lr) < 3:
    return {'steepest_lr': None, 'valley_lr': None, 'min_loss_lr': None, 'method': method}
  lo = int(np.argmin(y))
  slope = np.gradient(y, np.log(lr))
  steep = int(np.argmin(slope[:lo + 1])) if lo > 0 else 0
  # Longest run of strictly decreasing values: [start, end] with y[start] > ... > y[end].
  best, start = (0, 0), 0
  for i in range(1, len(y)):
    if y[i] >= y[i - 1]:
      start = i
    if i - start > best[1] - best[0]:
      best = (start, i)
  valley = (best[0] + best[1]) // 2
  return {'steepest_lr': float(lr[steep]), 'valley_lr': float(lr[valley]),
          'min_loss_lr': float(lr[lo]), 'method': method}


# ----------------------------------------------------------------------------------------------
# The result


@dataclasses.dataclass
class RangeTestResult:
  """Everything a range test measured, its reading, and how to save and draw it."""
  lrs: np.ndarray                 # [n] LR of update s
  train_loss: np.ndarray          # [n] loss of batch s (before update s)
  train_loss_smoothed: np.ndarray  # [n] bias-corrected EMA
  eval_steps: np.ndarray          # [m] updates done at each evaluation (0 first)
  eval_lrs: np.ndarray            # [m] schedule(step)
  eval_accuracy: np.ndarray       # [m]
  eval_loss: np.ndarray           # [m]
  suggestion: dict
  loss_suggestion: dict
  diverged_at: int | None = None  # update whose smoothed loss triggered the stop
  diverge_reason: str = ''
  settings: dict = dataclasses.field(default_factory=dict)
  wall_seconds: float = 0.0

  @property
  def max_lr(self) -> float:
    return self.suggestion['max_lr']

  def summary(self) -> str:
    s = self.suggestion
    line = (f"suggested LR range: {s['min_lr_clr']:.4g} .. {s['max_lr']:.4g} for CLR (1cycle: "
            f"{s['min_lr_1cycle']:.4g} .. {s['max_lr']:.4g}), method {s['method']}: "
            f"{s['explanation']}")
    loss = self.loss_suggestion
    if loss.get('steepest_lr') is not None:
      line += (f" Loss-based: steepest {loss['steepest_lr']:.3g}, valley "
               f"{loss['valley_lr']:.3g}, minimum {loss['min_loss_lr']:.3g}.")
    if self.diverged_at is not None:
      line += f' Stopped early: {self.diverge_reason}.'
    return line

  def to_dict(self) -> dict:
    f = lambda a: [float(x) for x in a]
    return {
        'lr': f(self.lrs), 'train_loss': f(self.train_loss),
        'train_loss_smoothed': f(self.train_loss_smoothed),
        'eval': {'step': [int(x) for x in self.eval_steps], 'lr': f(self.eval_lrs),
                 'accuracy': f(self.eval_accuracy), 'loss': f(self.eval_loss),
                 'accuracy_smoothed': f(smooth_accuracy(self.eval_accuracy,
                                                        self.suggestion.get('window', 5)))},
        'suggestion': self.suggestion, 'loss_suggestion': self.loss_suggestion,
        'diverged_at': self.diverged_at,
        'diverged_lr': None if self.diverged_at is None else float(self.lrs[self.diverged_at]),
        'diverge_reason': self.diverge_reason, 'settings': self.settings,
        'wall_seconds': self.wall_seconds,
    }

  def save(self, workdir: str, *, plot: bool = True) -> str:
    """Writes workdir/lr_range.json (with provenance) and lr_range.png; returns the json path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, RESULT_FILE)
    metrics_lib.write_json(path, {**self.to_dict(), 'provenance': metrics_lib.provenance()})
    if plot and jax.process_index() == 0:
      self.plot(os.path.join(workdir, PLOT_FILE))
    return path

  def plot(self, path: str) -> None:
    """Accuracy and loss against LR, the suggestion marked (matplotlib, Agg; no pyplot state)."""
    # pylint: disable=g-import-not-at-top
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    # pylint: enable=g-import-not-at-top
    fig = Figure(figsize=(8, 7), layout='constrained')
    FigureCanvasAgg(fig)
    ax_acc, ax_loss = fig.subplots(2, 1, sharex=True)
    s = self.suggestion
    ax_acc.plot(self.eval_lrs, self.eval_accuracy, 'o', ms=3, alpha=0.5, label='test accuracy')
    ax_acc.plot(self.eval_lrs, smooth_accuracy(self.eval_accuracy, s.get('window', 5)), '-',
                label='smoothed (median)')
    ax_loss.plot(self.lrs, self.train_loss, '-', lw=0.5, alpha=0.4, label='train loss')
    ax_loss.plot(self.lrs, self.train_loss_smoothed, '-', label='train loss (EMA)')
    ax_loss.plot(self.eval_lrs, self.eval_loss, 'o-', ms=3, label='test loss')
    finite = self.train_loss_smoothed[np.isfinite(self.train_loss_smoothed)]
    if len(finite):  # Diverging losses would squash the useful part of the plot.
      every = np.concatenate([finite, self.eval_loss[np.isfinite(self.eval_loss)]])
      ax_loss.set_ylim(max(0.0, every.min() * 0.9), min(every.max(), 4 * finite[0]) * 1.1)
    for ax in (ax_acc, ax_loss):
      ax.axvline(s['max_lr'], color='C3', label=f"max_lr {s['max_lr']:.3g}")
      ax.axvline(s['min_lr_clr'], color='C3', ls='--', label=f"CLR min {s['min_lr_clr']:.3g}")
      ax.axvline(s['min_lr_1cycle'], color='C3', ls=':',
                 label=f"1cycle min {s['min_lr_1cycle']:.3g}")
      if self.diverged_at is not None:
        ax.axvline(self.lrs[self.diverged_at], color='k', ls='-.', label='stopped')
      ax.grid(alpha=0.3)
    for key, style in (('steepest_lr', (0, (1, 3))), ('valley_lr', (0, (5, 3)))):
      if self.loss_suggestion.get(key) is not None:
        ax_loss.axvline(self.loss_suggestion[key], color='C2', ls=style,
                        label=f"{key[:-3]} {self.loss_suggestion[key]:.3g}")
    if self.settings.get('mode') == 'exp':
      ax_loss.set_xscale('log')
    flat = ' (flat: accuracy never fell)' if s['flat'] else ''
    ax_acc.set_title(f"LR range test {self.settings.get('model', '')}{flat}")
    ax_acc.set_ylabel('test accuracy')
    ax_loss.set_ylabel('loss')
    ax_loss.set_xlabel('learning rate')
    ax_acc.legend(fontsize=7)
    ax_loss.legend(fontsize=7)
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------------------------
# The sweep


def _make_pop_loss(mesh):
  """`fn(state) -> (loss sum, state with sums['loss'] = 0)`, the state donated (no copy)."""

  def pop(state: train.TrainState):
    loss = state.sums['loss']
    return loss, state.replace(sums={**state.sums, 'loss': jnp.zeros_like(loss)})
  return jax.jit(pop, donate_argnums=0, out_shardings=NamedSharding(mesh, P()))


def _sweep(state: train.TrainState, train_fn, pop_loss, feed, evaluator,
           lr_fn: Callable, *, num_steps: int, eval_every: int, smoothing: float,
           diverge_factor: float, settings: dict, suggest_kw: dict, bar=None,
           check_lr: bool = True) -> RangeTestResult:
  """Runs the sweep from `state` (consumed: donated to the train step) and reads it.

  `feed` yields each update's input (`train.MemoryFeed` / `train.StreamFeed`); `evaluator`
  maps a state to {'eval_accuracy', 'eval_loss', ...}.
  """
  t0 = time.perf_counter()
  lrs = np.asarray(jax.device_get(jax.vmap(lr_fn)(jnp.arange(num_steps + 1))), np.float64)
  watch = _LossWatch(smoothing, diverge_factor)
  losses, smoothed, pending, evals = [], [], [], []

  def evaluate(step):
    r = evaluator(state)
    evals.append((step, lrs[step], r['eval_accuracy'], r['eval_loss']))

  evaluate(0)
  step = 0
  while step < num_steps:
    state = train_fn(state, next(feed))
    loss, state = pop_loss(state)
    pending.append(loss)
    step += 1
    if step % eval_every and step < num_steps:
      continue
    for x in jax.device_get(pending):
      losses.append(float(x))
      smoothed.append(watch.push(float(x)))
    pending = []
    if check_lr and len(evals) == 1:
      # The LR the optimizer actually used must be the sweep's: an optimizer whose own schedule
      # overrides the injected value would make the whole test meaningless.
      used = float(jax.device_get(optim.current_hyperparams(state.opt_state)['learning_rate']))
      if not math.isclose(used, lrs[step - 1], rel_tol=1e-4, abs_tol=1e-7):
        raise ValueError(f'the optimizer used LR {used:.6g} at update {step - 1} where the sweep '
                         f'set {lrs[step - 1]:.6g}: build it with a numeric learning_rate '
                         '(optax.inject_hyperparams(opt)(learning_rate=0.0, ...)) or pass a '
                         'factory lr -> optimizer')
    evaluate(step)
    if bar is not None:
      bar.update(step - bar.n)
      bar.set_postfix(lr=f'{lrs[step - 1]:.3g}', loss=f'{smoothed[-1]:.3f}',
                      acc=f'{evals[-1][2]:.3f}', refresh=False)
    if watch.diverged_at is not None:
      logging.info('LR range test stopped at update %d: %s.', step, watch.reason)
      break
  if bar is not None:
    bar.close()

  ev = np.asarray([e[:2] for e in evals], np.float64)
  acc = np.asarray([e[2] for e in evals], np.float64)
  eval_loss = np.asarray([e[3] for e in evals], np.float64)
  stop_lr = None if watch.diverged_at is None else float(lrs[watch.diverged_at])
  sug = suggest(ev[:, 1], acc, stop_lr=stop_lr, **suggest_kw)
  lsug = suggest_from_loss(lrs[:len(losses)], smoothed, stop=watch.diverged_at)
  return RangeTestResult(
      lrs=lrs[:len(losses)], train_loss=np.asarray(losses),
      train_loss_smoothed=np.asarray(smoothed),
      eval_steps=ev[:, 0].astype(np.int64), eval_lrs=ev[:, 1], eval_accuracy=acc,
      eval_loss=eval_loss, suggestion=sug, loss_suggestion=lsug, diverged_at=watch.diverged_at,
      diverge_reason=watch.reason, settings=settings, wall_seconds=time.perf_counter() - t0)


def _suggest_kw(min_lr_div_clr: float, min_lr_div_1cycle: float) -> dict:
  return {'min_lr_div_clr': float(min_lr_div_clr), 'min_lr_div_1cycle': float(min_lr_div_1cycle)}


# ----------------------------------------------------------------------------------------------
# Config entry point


def range_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` set up as a range test: mode, the 'lr_range' schedule, num_steps.

  So `--config=configs/resnet56.py --config.mode=lr_range` sweeps the training run's model and
  optimizer over config.lr_range.
  """
  from superconv import config_checks  # pylint: disable=g-import-not-at-top
  c = config.copy_and_resolve_references()
  c.mode = 'lr_range'
  optim.sweep_schedule(c)
  c.num_steps = int(c.lr_range.num_steps)
  r = c.lr_range
  checks = (
      (int(r.eval_every_steps) > 0, 'eval_every_steps',
       f'must be positive (the test reads the held-out accuracy), got {r.eval_every_steps}'),
      (0.0 <= r.smoothing < 1.0, 'smoothing', f'must be in [0, 1), got {r.smoothing}'),
      (r.diverge_factor == 0 or r.diverge_factor > 1, 'diverge_factor',
       f'must be 0 (never stop) or > 1, got {r.diverge_factor}'),
      (r.min_lr_div_clr >= 1, 'min_lr_div_clr', f'must be >= 1, got {r.min_lr_div_clr}'),
      (r.min_lr_div_1cycle >= 1, 'min_lr_div_1cycle', f'must be >= 1, got {r.min_lr_div_1cycle}'),
  )
  for ok, field, message in checks:
    if not ok:
      raise config_checks.ConfigError(f'config.lr_range.{field}: {message}.')
  return c


def run(config: ml_collections.ConfigDict, workdir: str) -> RangeTestResult:
  """The LR range test of `config` (mode 'lr_range'): sweeps, evaluates, writes and prints.

  Uses the training run's pieces: `train.open_inputs` (in memory, or streamed for ImageNet),
  `train.build_model`, `optim.create_optimizer` (schedule 'lr_range'), `train.create_train_state`
  and `train.make_train_fn` on the same ('data',) mesh. No checkpoints: a sweep is short, rerun it.
  """
  from superconv import config_checks  # pylint: disable=g-import-not-at-top
  config = range_config(config)
  config_checks.validate(config)
  os.makedirs(workdir, exist_ok=True)
  metrics_lib.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  r = config.lr_range

  mesh = train.make_mesh()
  inputs = train.open_inputs(config)
  model = train.build_model(config, inputs.num_classes)
  tx = optim.create_optimizer(config)
  lr_fn, _ = optim.build_schedules(config)
  spec = train.input_spec(config)
  state = train.create_train_state(model, tx, jax.random.PRNGKey(config.seed), inputs.image_shape,
                                   mesh)
  feed, evaluator = inputs.feed(mesh), inputs.evaluator(model, mesh, spec)
  logging.info('LR range test: %s, LR %g -> %g (%s) over %d updates, batch %d, %d devices.',
               config.model.name, r.min_lr, r.max_lr, r.mode, r.num_steps, config.batch_size,
               mesh.devices.size)
  bar = None
  if jax.process_index() == 0 and config.progress_bar:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=r.num_steps, unit='step', dynamic_ncols=True, desc='lr range')
  settings = {'min_lr': float(r.min_lr), 'max_lr': float(r.max_lr), 'num_steps': int(r.num_steps),
              'mode': r.mode, 'eval_every_steps': int(r.eval_every_steps),
              'smoothing': float(r.smoothing), 'diverge_factor': float(r.diverge_factor),
              'batch_size': int(config.batch_size), 'model': config.model.name,
              'dataset': config.data.name, 'optimizer': config.optimizer.name,
              'momentum': config.momentum_schedule.to_dict(),
              'weight_decay': float(config.optimizer.weight_decay), 'seed': int(config.seed)}
  with contextlib.closing(feed):
    result = _sweep(state, train.make_train_fn(model, tx, mesh, spec, 1), _make_pop_loss(mesh),
                    feed, evaluator, lr_fn, num_steps=int(r.num_steps),
                    eval_every=int(r.eval_every_steps), smoothing=float(r.smoothing),
                    diverge_factor=float(r.diverge_factor), settings=settings,
                    suggest_kw=_suggest_kw(r.min_lr_div_clr, r.min_lr_div_1cycle), bar=bar)
  result.save(workdir)
  if jax.process_index() == 0:
    print(result.summary(), flush=True)
  return result


# ----------------------------------------------------------------------------------------------
# Python API for a user's own model, optimizer and data


class _SweptState(NamedTuple):
  count: jax.Array   # int32: updates done, the sweep's step
  inner: Any         # an optax.inject_hyperparams state (hyperparams['learning_rate'] driven)


def _drive_learning_rate(tx: optax.GradientTransformation,
                         lr_fn: Callable) -> optax.GradientTransformation:
  """Wraps an inject_hyperparams optimizer so update k uses learning_rate = lr_fn(k)."""

  def init(params):
    return _SweptState(jnp.zeros((), jnp.int32), tx.init(params))

  def update(updates, state, params=None):
    hp = dict(state.inner.hyperparams)
    hp['learning_rate'] = jnp.asarray(lr_fn(state.count), jnp.asarray(hp['learning_rate']).dtype)
    updates, inner = tx.update(updates, state.inner._replace(hyperparams=hp), params)
    return updates, _SweptState(state.count + 1, inner)

  return optax.GradientTransformation(init, update)


def _has_injected_lr(opt_state) -> bool:
  hp = getattr(opt_state, 'hyperparams', None)
  return isinstance(hp, dict) and 'learning_rate' in hp and hasattr(opt_state, '_replace')


def _private_copy(tree: Any) -> Any:
  """Host copies of every leaf: nothing the sweep holds shares memory with the caller's arrays."""
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def range_test(model, optimizer: optax.GradientTransformation | Callable[[Any], Any],
               variables: dict, train_data: tuple[Any, Any], eval_data: tuple[Any, Any], *,
               min_lr: float, max_lr: float, num_steps: int, batch_size: int,
               mode: str = 'linear', eval_every_steps: int | None = None,
               eval_batch_size: int = 1000, key: jax.Array | None = None, opt_state: Any = None,
               mean: Any = None, scale: float = 1.0, mirror: bool = False,
               crop_padding: int = 0, smoothing: float = 0.98, diverge_factor: float = 4.0,
               min_lr_div_clr: float = 4.0, min_lr_div_1cycle: float = 10.0,
               devices: Sequence[Any] | None = None, progress: bool = False,
               **suggest_kw) -> RangeTestResult:
  r"""LR range test of a user's Flax model, optax optimizer and in-memory data.

  The caller's state is left untouched: weights, BN statistics, optimizer state and key are
  copied to private device buffers before the sweep, and only those are donated.

  Args:
    model: a Flax Linen module called as `model.apply({'params', 'batch_stats'}, x,
      train=bool, mutable=['batch_stats'], rngs={'dropout': k})` (superconv's convention;
      models without BN or dropout work unchanged).
    optimizer: either a factory `learning_rate -> optax.GradientTransformation` (it receives
      each update's LR as a scalar array, e.g. `lambda lr: optax.sgd(lr, momentum=0.9)`), or a
      transformation built with `optax.inject_hyperparams(...)(learning_rate=<number>, ...)`,
      whose learning_rate the sweep overrides at every update.
    variables: {'params': ..., 'batch_stats': ... (optional)} to start from.
    train_data: (images [N, H, W, C], labels int [N]); uint8 or float (already preprocessed:
      leave mean None, scale 1, mirror False).
    eval_data: (images, labels) held out, evaluated every `eval_every_steps` updates.
    min_lr, max_lr, num_steps, mode: the sweep (`schedules.lr_range`).
    batch_size: global batch (divisible by the number of devices).
    eval_every_steps: default num_steps // 20 (at least 1).
    key: run key for batch order, augmentation and dropout (default PRNGKey(0)); not consumed.
    opt_state: optimizer state to start from (default: fresh `init`). For a factory, the
      state of `factory(lr).init(params)`; for an injected optimizer, its own state.
    mean, scale, mirror, crop_padding: the pipeline's preprocessing, x = scale * (image - mean)
      (mean default zeros).
    smoothing, diverge_factor: the training-loss EMA and the early stop (0: only non-finite).
    min_lr_div_clr, min_lr_div_1cycle: min_lr = max_lr / these.
    devices: devices of the data mesh (default all).
    progress: show a tqdm bar.
    **suggest_kw: `suggest` options (window, atol, rtol, rule, flat_rule).

  Returns:
    A `RangeTestResult`; `.suggestion['max_lr']`, `.summary()`, `.save(workdir)`.
  """
  mesh = train.make_mesh(devices)
  lr_fn = schedules.lr_range(min_lr, max_lr, num_steps, mode=mode)
  eval_every = int(eval_every_steps or max(1, num_steps // 20))
  params = _private_copy(variables['params'])
  batch_stats = _private_copy(variables.get('batch_stats', {}))

  if isinstance(optimizer, optax.GradientTransformation):
    base = optimizer
    start = _private_copy(opt_state) if opt_state is not None else base.init(params)
  elif callable(optimizer):
    factory = optimizer

    def make(learning_rate):
      return factory(learning_rate)
    base = optax.inject_hyperparams(make)(learning_rate=float(min_lr))
    start = base.init(params)
    if opt_state is not None:
      start = start._replace(inner_state=_private_copy(opt_state))
  else:
    raise TypeError(f'optimizer must be an optax.GradientTransformation or a factory '
                    f'lr -> GradientTransformation, got {type(optimizer).__name__}')
  if not _has_injected_lr(start):
    raise ValueError('the optimizer state has no top-level injected learning_rate: pass a '
                     'factory lr -> optimizer, or build the optimizer with '
                     'optax.inject_hyperparams(opt)(learning_rate=0.0, ...)')
  tx = _drive_learning_rate(base, lr_fn)

  if key is None:
    key = jax.random.PRNGKey(0)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  images, labels = train_data
  eval_images, eval_labels = eval_data
  images = np.asarray(images)
  if mean is None:
    mean = np.zeros(images.shape[1:], np.float32)
  host_state = train.TrainState(
      step=np.zeros((), np.int32), params=params, batch_stats=batch_stats,
      opt_state=_SweptState(np.zeros((), np.int32), _private_copy(start)),
      key=np.array(key, copy=True), sums=jax.device_get(train.zero_sums()))
  replicated = NamedSharding(mesh, P())
  # A jitted copy: the state is owned by XLA, so donating it can never write into host memory
  # that the CPU backend may have aliased from the caller's numpy arrays.
  state = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=replicated)(
      train.replicate(host_state, mesh))
  data = train.replicate({'images': images, 'labels': np.asarray(labels, np.int32),
                          'mean': np.asarray(mean, np.float32)}, mesh)
  spec = train.InputSpec(batch_size=batch_size, mirror=mirror, crop_padding=crop_padding,
                         scale=scale, dtype=jnp.float32)
  evaluator = train.Evaluator(model, mesh, spec, np.asarray(eval_images),
                              np.asarray(eval_labels, np.int32), np.asarray(mean, np.float32),
                              eval_batch_size)
  bar = None
  if progress:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=num_steps, unit='step', dynamic_ncols=True, desc='lr range')
  settings = {'min_lr': float(min_lr), 'max_lr': float(max_lr), 'num_steps': int(num_steps),
              'mode': mode, 'eval_every_steps': eval_every, 'smoothing': float(smoothing),
              'diverge_factor': float(diverge_factor), 'batch_size': int(batch_size),
              'model': type(model).__name__}
  return _sweep(state, train.make_train_fn(model, tx, mesh, spec, 1), _make_pop_loss(mesh),
                itertools.repeat(data), evaluator, lr_fn, num_steps=int(num_steps), eval_every=eval_every,
                smoothing=smoothing, diverge_factor=diverge_factor, settings=settings,
                suggest_kw={**_suggest_kw(min_lr_div_clr, min_lr_div_1cycle), **suggest_kw},
                bar=bar)


# ----------------------------------------------------------------------------------------------
# Feeding a suggestion into a training config


def apply_suggestion(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with its LR bounds from the range test in `config.lr_range_result` (if set).

  The schedule's registry entry says which fields (`optim.apply_lr_bounds`): 'triangular' (CLR):
  max_lr = suggested max, base_lr = max / lr_range.min_lr_div_clr (as saved in the result).
  'one_cycle': max_lr and div_factor = max / the 1cycle min, so the run starts at the suggested
  min. 'caffe_one_cycle': max_lr and base_lr = the 1cycle min.
  Returns a copy; `config` itself is not changed. An empty `lr_range_result` returns `config`.

  Raises:
    config_checks.ConfigError: unreadable file, unreliable suggestion, or a schedule without
      LR bounds to set.
  """
  from superconv import config_checks  # pylint: disable=g-import-not-at-top
  path = config.get('lr_range_result', '')
  if not path:
    return config
  try:
    with open(path) as f:
      s = json.load(f)['suggestion']
    max_lr, clr_min, one_min = (float(s[k]) for k in ('max_lr', 'min_lr_clr', 'min_lr_1cycle'))
  except (OSError, KeyError, TypeError, ValueError) as e:
    raise config_checks.ConfigError(
        f'config.lr_range_result: cannot read a suggestion from {path!r} ({e}).') from None
  if not s.get('reliable', True):
    raise config_checks.ConfigError(
        f'config.lr_range_result: the range test in {path!r} gave no reliable reading '
        f"({s.get('explanation', '')}); set the LRs by hand or rerun the test.")
  c = config.copy_and_resolve_references()
  try:
    set_fields = optim.apply_lr_bounds(c.schedule, max_lr=max_lr, min_lr_clr=clr_min,
                                       min_lr_1cycle=one_min)
  except ValueError as e:
    raise config_checks.ConfigError(f'config.lr_range_result: {e}') from None
  logging.info('LR bounds from %s: %s (%s).', path,
               ', '.join(f'schedule.{k}={v:g}' for k, v in set_fields.items()),
               s.get('method', ''))
  return c
