"""Reading an LR range test's curves: the paper's accuracy rule and loss-based readings.

numpy only (no JAX): the rules can be applied to any logged curve, e.g. a Caffe log.
See the `superconv.lr_range` package docstring for the rules and their failure modes.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np



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
            min_lr_div_1cycle: float = 10.0, min_rise: float = 0.1,
            stop_lr: float | None = None) -> dict[str, Any]:
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
    min_rise: the smoothed accuracy must rise by more than max(atol, min_rise) above the first
      evaluation before the fall (or the end) for a reading: a sweep that barely trained the net
      (ResNet-20, 100 updates: 0.10 -> 0.18) never falls only because accuracy still grows with
      time, which is not the flat curve of super-convergence.
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
  needed = max(atol, min_rise)
  if rise <= needed or upto < 3 or max_lr <= 0 or (fall is None and stop_lr is not None):
    out.update(reliable=False, flat=False)
    method = 'unreliable'
    if fall is None and stop_lr is not None:
      explanation = f'the training loss diverged at LR {stop_lr:.4g} before a second evaluation'
    elif rise <= needed or upto < 3:
      explanation = (f'the smoothed accuracy rose by only {rise:.3g} from its start over '
                     f'{upto} evaluations (needs > {needed:g} over >= 3: the net learned too '
                     'little for the curve to show the LR)')
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




def suggest_from_valley(loss_reading: dict[str, Any], min_lr_div_clr: float = 4.0,
                        min_lr_div_1cycle: float = 10.0) -> dict[str, Any]:
  """The 'fastai' preset's suggestion: max_lr = the loss valley (`suggest_from_loss`).

  Same keys as `suggest`, so a loss reading feeds a CLR or 1cycle config like an accuracy one;
  unreliable when the curve had too few usable points for a valley.

  Examples:
    >>> s = suggest_from_valley({'valley_lr': 0.02, 'steepest_lr': 0.01, 'min_loss_lr': 0.3})
    >>> s['max_lr'], s['min_lr_1cycle'], s['method'], s['reliable']
    (0.02, 0.002, 'valley', True)
  """
  valley = loss_reading.get('valley_lr')
  reliable = valley is not None and valley > 0
  max_lr = float(valley) if reliable else 0.0
  explanation = ('max_lr = the middle of the longest descent of the smoothed training loss '
                 '(fastai\'s "valley")' if reliable else
                 'the smoothed training loss had too few usable points for a valley')
  return {'max_lr': max_lr, 'min_lr_clr': max_lr / min_lr_div_clr,
          'min_lr_1cycle': max_lr / min_lr_div_1cycle, 'method': 'valley' if reliable
          else 'unreliable', 'explanation': explanation, 'flat': False, 'reliable': reliable,
          'peak_lr': None, 'peak_accuracy': None, 'fall_lr': None, 'tolerance': None,
          'window': 5}
