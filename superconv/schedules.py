"""Learning-rate and momentum schedules of Smith's papers, as pure `step -> float32` functions.

Every factory validates its arguments in Python (raising `ValueError` that names the bad
argument) and returns an `optax.Schedule`: a pure function of the integer update counter that
uses only `jnp` (no Python branching on the step), so it can be traced once under `jax.jit` and
handed to `optax.inject_hyperparams`. Step `k` is the 0-based index of the update that uses the
value, exactly Caffe's `iter_` in `Iteration k, lr = ...`. Steps below 0 give the value at 0.

Counters are kept in int32 as long as possible: the CLR triangle and the Caffe policies are
computed from integer remainders, and 1cycle phases from the exact integer distance to each
phase boundary, so the float32 results are correctly rounded (or within a few ulp) even at the
end of a long 1cycle run, where torch computes `initial + (min - initial) * pct` in float64.

References:
  L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", arXiv:1506.01186 (2015).
  L. N. Smith and N. Topin, "Super-Convergence: Very Fast Training of Neural Networks Using
  Large Learning Rates", arXiv:1708.07120 (2017).
  L. N. Smith, "A disciplined approach to neural network hyper-parameters: Part 1",
  arXiv:1803.09820 (2018).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    'COOLDOWNS', 'TORCH_ONE_CYCLE', 'TORCH_ONE_CYCLE_MOMENTUM', 'caffe_one_cycle', 'constant',
    'cyclical_momentum', 'inv', 'linear_decay', 'lr_range', 'multistep', 'one_cycle',
    'one_cycle_momentum', 'step_decay', 'triangular', 'warmup_constant', 'warmup_cosine',
    'warmup_stable_decay',
]

_F32 = jnp.float32


# ---------------------------------------------------------------------------------------------
# Argument validation (Python only, before anything is traced).


def _check_int(name: str, value, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    if not (isinstance(value, numbers.Real) and float(value).is_integer()):
      raise ValueError(f'{name} must be an integer number of updates, got {value!r}')
  if int(value) < minimum:
    raise ValueError(f'{name} must be >= {minimum}, got {value!r}')
  return int(value)


def _check_real(name: str, value, *, lo: float | None = None, lo_open: bool = False,
                hi: float | None = None, hi_open: bool = False) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise ValueError(f'{name} must be a finite number, got {value!r}')
  v = float(value)
  if lo is not None and (v <= lo if lo_open else v < lo):
    raise ValueError(f'{name} must be {">" if lo_open else ">="} {lo}, got {value!r}')
  if hi is not None and (v >= hi if hi_open else v > hi):
    raise ValueError(f'{name} must be {"<" if hi_open else "<="} {hi}, got {value!r}')
  return v


def _check_choice(name: str, value, choices: Sequence[str]) -> str:
  if value not in choices:
    raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}')
  return value


def _step(step) -> jnp.ndarray:
  """The update counter as int32, clamped below at 0 (values before training = value at 0)."""
  return jnp.maximum(jnp.asarray(step).astype(jnp.int32), 0)


def _triangle(it: jnp.ndarray, step_size: int) -> jnp.ndarray:
  """CLR triangle max(0, 1 - x) in [0, 1], from the exact integer position in the cycle.

  With r = it mod (2 ss), Smith's x = |it/ss - 2 cycle + 1| equals |r - ss| / ss, so
  1 - x = (ss - |r - ss|) / ss: an integer numerator and one float32 rounding.
  """
  r = jnp.remainder(it, 2 * step_size)
  return (step_size - jnp.abs(r - step_size)).astype(_F32) / _F32(step_size)


# ---------------------------------------------------------------------------------------------
# Cyclical learning rates (Smith 2015) and the LR range test.


def triangular(base_lr: float, max_lr: float, step_size: int, *, mode: str = 'triangular',
               gamma: float = 1.0) -> optax.Schedule:
  r"""Smith's cyclical learning rate (CLR), as Caffe's `lr_policy: "triangular"`.

  With `it` the update counter and `ss` the half-cycle length::

    cycle = floor(1 + it / (2 ss))
    x     = |it / ss - 2 cycle + 1|
    lr    = base_lr + (max_lr - base_lr) * max(0, 1 - x) * scale(it)

  where `scale = 1` ('triangular'), `1 / 2**(cycle - 1)` ('triangular2': the amplitude halves
  every cycle) or `gamma**it` ('exp_range'). The schedule keeps cycling after the first cycle;
  the super-convergence runs (arXiv:1708.07120, Fig. 1a) use exactly one cycle of 0.1-3.0 with
  `ss` = 5,000 and stop at 10,000 updates, back at `base_lr`.

  Args:
    base_lr: lower learning rate (>= 0), at it = 0, 2 ss, 4 ss, ...
    max_lr: upper learning rate (>= base_lr, > 0), at it = ss, 3 ss, ...
    step_size: updates per half cycle (Caffe `stepsize`), a positive integer.
    mode: 'triangular' | 'triangular2' | 'exp_range'.
    gamma: base of the 'exp_range' decay per update, in (0, 1]; ignored by other modes.

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 learning rate.

  Examples:
    >>> lr = triangular(0.1, 3.0, 5000)
    >>> [round(float(lr(s)), 6) for s in (0, 100, 2500, 5000, 9900, 10000)]
    [0.1, 0.158, 1.55, 3.0, 0.158, 0.1]
    >>> lr2 = triangular(0.0, 1.0, 2, mode='triangular2')
    >>> [float(lr2(s)) for s in range(9)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.25, 0.5, 0.25, 0.0]

  References:
    Smith, arXiv:1506.01186 (2015), Sec. 3.1; Smith & Topin, arXiv:1708.07120 (2017).
  """
  base_lr = _check_real('base_lr', base_lr, lo=0.0)
  max_lr = _check_real('max_lr', max_lr, lo=0.0, lo_open=True)
  if max_lr < base_lr:
    raise ValueError(f'max_lr must be >= base_lr, got max_lr={max_lr} < base_lr={base_lr}')
  step_size = _check_int('step_size', step_size)
  mode = _check_choice('mode', mode, ('triangular', 'triangular2', 'exp_range'))
  gamma = _check_real('gamma', gamma, lo=0.0, lo_open=True, hi=1.0)

  def schedule(step):
    it = _step(step)
    tri = _triangle(it, step_size)
    if mode == 'triangular2':  # Python branch on the *mode*, fixed at construction.
      cycle = it // (2 * step_size)  # 0-based: cycle - 1 in Smith's notation.
      scale = jnp.exp2(-cycle.astype(_F32))
    elif mode == 'exp_range':
      scale = jnp.power(_F32(gamma), it.astype(_F32))
    else:
      scale = _F32(1.0)
    return _F32(base_lr) + _F32(max_lr - base_lr) * (tri * scale)

  return schedule


def lr_range(min_lr: float, max_lr: float, num_steps: int, *, mode: str = 'linear'
             ) -> optax.Schedule:
  r"""LR range test sweep: from `min_lr` at update 0 to `max_lr` at update `num_steps`.

  ::

    t  = clip(step, 0, num_steps) / num_steps
    lr = min_lr + (max_lr - min_lr) * t          ('linear', the paper's Fig. 2 sweeps)
    lr = min_lr * (max_lr / min_lr) ** t         ('exp', needs min_lr > 0)

  The authors ran 'linear' as a CLR 'triangular' policy with base 0 and stepsize = max_iter
  (only the rising half), which gives the same values.

  Args:
    min_lr: learning rate at update 0 (>= 0; > 0 for 'exp').
    max_lr: learning rate at update `num_steps` (> min_lr).
    num_steps: length of the sweep in updates, a positive integer.
    mode: 'linear' | 'exp'.

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 learning rate, held at the
    end values outside [0, num_steps].

  Examples:
    >>> lin = lr_range(0.0, 3.0, 5000)
    >>> [round(float(lin(s)), 6) for s in (0, 1000, 5000, 6000)]
    [0.0, 0.6, 3.0, 3.0]
    >>> ex = lr_range(1e-4, 1.0, 4, mode='exp')
    >>> [round(float(ex(s)), 7) for s in range(5)]
    [0.0001, 0.001, 0.01, 0.1, 1.0]

  References:
    Smith, arXiv:1506.01186 (2015), Sec. 3.3; Smith & Topin, arXiv:1708.07120 (2017), Sec. 3.
  """
  mode = _check_choice('mode', mode, ('linear', 'exp'))
  min_lr = _check_real('min_lr', min_lr, lo=0.0, lo_open=(mode == 'exp'))
  max_lr = _check_real('max_lr', max_lr, lo=0.0, lo_open=True)
  if max_lr <= min_lr:
    raise ValueError(f'max_lr must be > min_lr, got max_lr={max_lr} <= min_lr={min_lr}')
  num_steps = _check_int('num_steps', num_steps)

  def schedule(step):
    it = jnp.minimum(_step(step), num_steps)
    if mode == 'exp':
      t = it.astype(_F32) / _F32(num_steps)
      return _F32(min_lr) * jnp.power(_F32(max_lr / min_lr), t)
    # Split into the two endpoint weights so that both ends are exact.
    w_hi = it.astype(_F32) / _F32(num_steps)
    w_lo = (num_steps - it).astype(_F32) / _F32(num_steps)
    return _F32(min_lr) * w_lo + _F32(max_lr) * w_hi

  return schedule


# ---------------------------------------------------------------------------------------------
# 1cycle (Smith 2018), with the phase arithmetic of torch.optim.lr_scheduler.OneCycleLR.


def _one_cycle_phases(total_steps, pct_start, three_phase):
  """Phase end steps exactly as OneCycleLR computes them (float64), validated increasing."""
  total_steps = _check_int('total_steps', total_steps, minimum=2)
  pct_start = _check_real('pct_start', pct_start, lo=0.0, lo_open=True, hi=1.0, hi_open=True)
  if three_phase:
    ends = [pct_start * total_steps - 1, 2 * pct_start * total_steps - 2, total_steps - 1.0]
  else:
    ends = [pct_start * total_steps - 1, total_steps - 1.0]
  starts = [0.0] + ends[:-1]
  if any(e <= s for s, e in zip(starts, ends)):
    raise ValueError(
        f'pct_start={pct_start} with total_steps={total_steps} (three_phase={three_phase}) gives '
        f'phase end steps {ends}, which must be strictly increasing from 0: need '
        f'pct_start * total_steps > 1' + (' and 2 * pct_start * total_steps < total_steps + 1'
                                          if three_phase else ''))
  return total_steps, pct_start, starts, ends


def _offset(it: jnp.ndarray, boundary: float) -> jnp.ndarray:
  """float32 `it - boundary` without losing the fraction of a large float boundary.

  The integer part is subtracted in int32 (exact), then the fraction in [0, 1) in float32.
  """
  hi = math.floor(boundary)
  return (it - hi).astype(_F32) - _F32(boundary - hi)


def _piecewise_anneal(step, starts, ends, values, anneal):
  """Interpolates values[i] -> values[i + 1] over phase i, as OneCycleLR's phase loop.

  Phase i covers (starts[i], ends[i]]; step 0 belongs to phase 0 and steps past the last end
  are held at the final value (OneCycleLR raises there). With wa = (end - it) / (end - start)
  and wb = (it - start) / (end - start) = 1 - wa, the value is
    linear: a * wa + b * wb                       == (b - a) * pct + a
    cos:    a * sin^2(pi/2 wa) + b * sin^2(pi/2 wb) == b + (a - b) / 2 * (1 + cos(pi pct))
  Both forms are sums of non-negative terms, so there is no cancellation near the phase end,
  where the values (e.g. 1e-4 x the initial LR) are smallest.
  """
  it = jnp.minimum(_step(step), int(ends[-1]))
  out = jnp.zeros((), _F32)
  for i in reversed(range(len(ends))):  # Unrolled at trace time: a fixed number of phases.
    length = _F32(ends[i] - starts[i])
    wa = -_offset(it, ends[i]) / length
    wb = _offset(it, starts[i]) / length
    if anneal == 'cos':
      wa = jnp.square(jnp.sin(_F32(np.pi / 2) * wa))
      wb = jnp.square(jnp.sin(_F32(np.pi / 2) * wb))
    if values[i] == values[i + 1]:  # A flat phase (momentum while annihilating): exactly flat.
      value = _F32(values[i])
    else:
      value = _F32(values[i]) * wa + _F32(values[i + 1]) * wb
    in_phase = _offset(it, ends[i]) <= 0 if i < len(ends) - 1 else True
    out = jnp.where(in_phase, value, out)
  return out


# torch.optim.lr_scheduler.OneCycleLR's defaults, for a call ported from PyTorch:
# `one_cycle(T, max_lr, **TORCH_ONE_CYCLE)` and `one_cycle_momentum(T, **TORCH_ONE_CYCLE_MOMENTUM)`
# give torch's curves (superconv's own defaults are Smith's 2018 recipe: see `one_cycle`).
TORCH_ONE_CYCLE = {'pct_start': 0.3, 'div_factor': 25.0, 'final_div_factor': 1e4,
                   'three_phase': False, 'anneal': 'cos'}
TORCH_ONE_CYCLE_MOMENTUM = {'base_momentum': 0.85, 'max_momentum': 0.95, 'pct_start': 0.3,
                            'three_phase': False, 'anneal': 'cos'}

# torch keywords that superconv spells differently or places elsewhere: a ported call that
# uses one must fail with a pointer, not fall through to another curve.
_TORCH_NAMES = {
    'anneal_strategy': "use anneal= ('linear' | 'cos'; torch's default is 'cos', superconv's "
                       "'linear': pass anneal='cos' for torch's curve)",
    'cycle_momentum': 'the momentum is a separate schedule: one_cycle_momentum(total_steps, ...)',
    'base_momentum': 'the momentum is a separate schedule: one_cycle_momentum(total_steps, ...)',
    'max_momentum': 'the momentum is a separate schedule: one_cycle_momentum(total_steps, ...)',
    'epochs': 'pass total_steps = epochs * steps_per_epoch',
    'steps_per_epoch': 'pass total_steps = epochs * steps_per_epoch',
    'optimizer': 'an optax schedule takes no optimizer: pass the schedule to the optimizer',
    'last_epoch': 'an optax schedule is a function of the step: call it at any step',
}


def _reject_torch_names(fn: str, kwargs: dict, allowed: Sequence[str] = ()) -> None:
  for name in kwargs:
    if name in _TORCH_NAMES and name not in allowed:
      raise TypeError(f'{fn}() got the PyTorch OneCycleLR keyword {name!r}: '
                      f'{_TORCH_NAMES[name]}. superconv.schedules.TORCH_ONE_CYCLE holds '
                      "torch's defaults.")
  if kwargs:
    raise TypeError(f'{fn}() got unexpected keyword argument(s) {sorted(kwargs)}')


def one_cycle(total_steps: int, max_lr: float, *, pct_start: float = 0.45,
              div_factor: float = 10.0, final_div_factor: float = 1000.0,
              three_phase: bool = True, anneal: str = 'linear', **torch_names
              ) -> optax.Schedule:
  r"""The 1cycle learning rate: torch's `OneCycleLR` arithmetic, Smith's 2018 defaults.

  Step for step equal to `OneCycleLR` *given the same five settings* (`pct_start`,
  `div_factor`, `final_div_factor`, `three_phase`, `anneal` = torch's `anneal_strategy`); all
  five defaults differ from torch's, so a call ported from PyTorch passes them explicitly:
  `one_cycle(T, max_lr, **TORCH_ONE_CYCLE)` is torch's default curve. A torch-only keyword
  (`anneal_strategy=`, `cycle_momentum=`, `epochs=`, ...) is a TypeError naming the
  superconv spelling.

  With `initial = max_lr / div_factor`, `min = initial / final_div_factor`, `T = total_steps`,
  `p = pct_start`, the phases end at (all in updates, possibly fractional)::

    three_phase: e1 = p T - 1, e2 = 2 p T - 2, e3 = T - 1:  initial -> max -> initial -> min
    two phases:  e1 = p T - 1,                 e2 = T - 1:  initial -> max -> min

  Step `it` lies in the first phase with `it <= end`; inside a phase from `s` to `e`,
  `pct = (it - s) / (e - s)` and the value goes from `a` to `b` as::

    linear: lr = a + (b - a) * pct
    cos:    lr = b + (a - b) / 2 * (1 + cos(pi * pct))

  Steps after `T - 1` hold `min` (OneCycleLR raises past `T` and extrapolates at `T`).

  Defaults follow Smith (2018): `min = max/10` as his recipe; linear ramps; a symmetric
  up-and-down cycle over 90 % of the run followed by an annihilation tail falling three orders
  of magnitude below the cycle's lower bound, as the authors' Caffe runs (whose floor is
  base/1000; see `caffe_one_cycle` for their exact shape). They differ from torch's defaults
  (`div_factor=25`, `final_div_factor=1e4`, `pct_start=0.3`, `anneal='cos'`,
  `three_phase=False`: a cosine warm-up then one long cosine decay) and from
  `optax.linear_onecycle_schedule`, whose boundaries are at `int(p T)` and `int(pct_final T)`
  (no `- 1`), whose down phase length is a separate `pct_final` and whose defaults are torch's.

  Args:
    total_steps: updates in the run (>= 2); the schedule reaches `min` at update T - 1.
    max_lr: peak learning rate (> 0), reached at update p T - 1.
    pct_start: fraction of the run spent rising, in (0, 1) (< ~0.5 for three phases).
    div_factor: initial LR = max_lr / div_factor (> 0).
    final_div_factor: final LR = initial LR / final_div_factor (> 0).
    three_phase: True: up, symmetric down, annihilate; False: up then down to the minimum.
    anneal: 'linear' | 'cos'.

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 learning rate.

  Examples:
    >>> lr = one_cycle(20, 1.0, pct_start=0.25)
    >>> [round(float(lr(s)), 6) for s in (0, 2, 4, 6, 8, 9, 19, 25)]
    [0.1, 0.55, 1.0, 0.55, 0.1, 0.090918, 0.0001, 0.0001]

  References:
    Smith, arXiv:1803.09820 (2018), Sec. 4.1; Smith & Topin, arXiv:1708.07120 (2017).
  """
  _reject_torch_names('one_cycle', torch_names)
  total_steps, pct_start, starts, ends = _one_cycle_phases(total_steps, pct_start, three_phase)
  max_lr = _check_real('max_lr', max_lr, lo=0.0, lo_open=True)
  div_factor = _check_real('div_factor', div_factor, lo=0.0, lo_open=True)
  final_div_factor = _check_real('final_div_factor', final_div_factor, lo=0.0, lo_open=True)
  anneal = _check_choice('anneal', anneal, ('linear', 'cos'))
  initial = max_lr / div_factor
  minimum = initial / final_div_factor
  values = [initial, max_lr, initial, minimum] if three_phase else [initial, max_lr, minimum]
  return lambda step: _piecewise_anneal(step, starts, ends, values, anneal)


def one_cycle_momentum(total_steps: int, *, base_momentum: float = 0.85,
                       max_momentum: float = 0.95, pct_start: float = 0.45,
                       three_phase: bool = True, anneal: str = 'linear', **torch_names
                       ) -> optax.Schedule:
  r"""The momentum that mirrors `one_cycle`: OneCycleLR's momentum with `cycle_momentum=True`.

  Its `pct_start`, `three_phase` and `anneal` defaults are Smith's, not torch's (0.3, False,
  'cos'): `one_cycle_momentum(T, **TORCH_ONE_CYCLE_MOMENTUM)` is torch's default momentum.
  `base_momentum > max_momentum` (the two swapped, which would invert the cycle) is an error.

  Same phases as `one_cycle` (same `total_steps`, `pct_start`, `three_phase`, `anneal`)::

    three_phase: max -> base (LR rising) -> max (LR falling) -> max (annihilation)
    two phases:  max -> base -> max

  so the momentum is at `base_momentum` exactly where the LR peaks.

  Args:
    total_steps: updates in the run (>= 2).
    base_momentum: momentum at the LR peak, in [0, 1].
    max_momentum: momentum at the start and the end, in [0, 1].
    pct_start: fraction of the run spent on the first phase, in (0, 1).
    three_phase: as in `one_cycle`.
    anneal: 'linear' | 'cos'.

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 momentum (or Adam b1).

  Examples:
    >>> m = one_cycle_momentum(20, pct_start=0.25)
    >>> [round(float(m(s)), 6) for s in (0, 2, 4, 6, 8, 19, 25)]
    [0.95, 0.9, 0.85, 0.9, 0.95, 0.95, 0.95]

  References:
    Smith, arXiv:1803.09820 (2018), Sec. 4.3 (cyclical momentum).
  """
  _reject_torch_names('one_cycle_momentum', torch_names,
                      allowed=('base_momentum', 'max_momentum'))
  total_steps, pct_start, starts, ends = _one_cycle_phases(total_steps, pct_start, three_phase)
  base_momentum = _check_real('base_momentum', base_momentum, lo=0.0, hi=1.0)
  max_momentum = _check_real('max_momentum', max_momentum, lo=0.0, hi=1.0)
  if base_momentum > max_momentum:
    raise ValueError(
        f'base_momentum={base_momentum} > max_momentum={max_momentum}: base_momentum is the '
        f'momentum at the LR peak (the low end, torch 0.85) and max_momentum the one at the start '
        f'and end (torch 0.95); swapped, they would invert the cycle')
  anneal = _check_choice('anneal', anneal, ('linear', 'cos'))
  values = ([max_momentum, base_momentum, max_momentum, max_momentum] if three_phase
            else [max_momentum, base_momentum, max_momentum])
  return lambda step: _piecewise_anneal(step, starts, ends, values, anneal)


def caffe_one_cycle(base_lr: float, max_lr: float, step_size: int, *,
                    floor_div: float = 1000.0) -> optax.Schedule:
  r"""The authors' modified-Caffe `lr_policy: "1cycle"`, reconstructed from their logs.

  With `ss = step_size` and `floor = base_lr / floor_div`::

    it <= ss:          lr = base_lr + (max_lr - base_lr) * it / ss
    ss < it <= 2 ss:   lr = max(max_lr * (2 ss - it) / ss, floor)
    it > 2 ss:         lr = floor

  Unlike the textbook shape (and `one_cycle`), the second half goes linearly from `max_lr`
  toward **0**, not toward `base_lr`: it passes `base_lr` at it = (2 - base/max) ss and keeps
  falling until the floor, which it reaches just before 2 ss and holds for the rest of the run
  (3.5-13.7 % of the updates in the CIFAR runs). The up and down halves are therefore not
  symmetric and there is no separate annihilation ramp.

  Args:
    base_lr: learning rate at update 0 (> 0).
    max_lr: peak learning rate at update `step_size` (>= base_lr).
    step_size: updates per half cycle (Caffe `stepsize`), a positive integer.
    floor_div: the floor is base_lr / floor_div (> 0; 1000 in all the authors' runs).

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 learning rate.

  Examples:
    >>> lr = caffe_one_cycle(0.1, 1.0, 10)
    >>> [round(float(lr(s)), 6) for s in (0, 5, 10, 15, 19, 20, 30)]
    [0.1, 0.55, 1.0, 0.5, 0.1, 0.0001, 0.0001]

  References:
    Smith, arXiv:1803.09820 (2018), Sec. 4.1, and the authors' Caffe logs (see
    docs/paper digest Sec. 3.3).
  """
  base_lr = _check_real('base_lr', base_lr, lo=0.0, lo_open=True)
  max_lr = _check_real('max_lr', max_lr, lo=0.0, lo_open=True)
  if max_lr < base_lr:
    raise ValueError(f'max_lr must be >= base_lr, got max_lr={max_lr} < base_lr={base_lr}')
  step_size = _check_int('step_size', step_size)
  floor_div = _check_real('floor_div', floor_div, lo=0.0, lo_open=True)
  floor = base_lr / floor_div

  def schedule(step):
    it = _step(step)
    up = _F32(base_lr) + _F32(max_lr - base_lr) * (it.astype(_F32) / _F32(step_size))
    # Integer numerator: exact for any it; negative after 2 ss, where the floor takes over.
    down = _F32(max_lr) * ((2 * step_size - it).astype(_F32) / _F32(step_size))
    return jnp.where(it <= step_size, up, jnp.maximum(down, _F32(floor)))

  return schedule


def cyclical_momentum(max_momentum: float, min_momentum: float, step_size: int
                      ) -> optax.Schedule:
  r"""Cyclical momentum as in the authors' Caffe runs: the CLR triangle, upside down.

  ::

    m = max_momentum - (max_momentum - min_momentum) * max(0, 1 - x)

  with `x` as in `triangular`. The momentum is at `min_momentum` where a CLR (or the Caffe
  1cycle) with the same `step_size` peaks, and it keeps cycling after 2 `step_size` updates (the
  logged momentum drifts down again during the Caffe 1cycle floor phase). `min_momentum` may
  exceed `max_momentum` for the increasing-momentum rows of arXiv:1803.09820 Table 1.

  Args:
    max_momentum: momentum at it = 0, 2 ss, ..., in [0, 1].
    min_momentum: momentum at it = ss, 3 ss, ..., in [0, 1].
    step_size: updates per half cycle, a positive integer.

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 momentum.

  Examples:
    >>> m = cyclical_momentum(0.95, 0.85, 4)
    >>> [round(float(m(s)), 6) for s in (0, 2, 4, 6, 8, 10)]
    [0.95, 0.9, 0.85, 0.9, 0.95, 0.9]

  References:
    Smith, arXiv:1803.09820 (2018), Sec. 4.3.
  """
  max_momentum = _check_real('max_momentum', max_momentum, lo=0.0, hi=1.0)
  min_momentum = _check_real('min_momentum', min_momentum, lo=0.0, hi=1.0)
  step_size = _check_int('step_size', step_size)

  def schedule(step):
    tri = _triangle(_step(step), step_size)
    return _F32(max_momentum) * (1 - tri) + _F32(min_momentum) * tri

  return schedule


# ---------------------------------------------------------------------------------------------
# Caffe's classic policies (the baselines) and a constant.


def multistep(base_lr: float, boundaries: Sequence[int], gamma: float) -> optax.Schedule:
  r"""Caffe `lr_policy: "multistep"`: `lr = base_lr * gamma ** #{b in boundaries: it >= b}`.

  Args:
    base_lr: learning rate before the first boundary (> 0).
    boundaries: strictly increasing positive update counts (Caffe `stepvalue`s); the factor
      applies from update `b` on (inclusive).
    gamma: factor per boundary, in (0, 1].

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 learning rate.

  Examples:
    >>> lr = multistep(0.35, (50_000, 70_000), 0.1)
    >>> [round(float(lr(s)), 7) for s in (0, 49_999, 50_000, 69_999, 70_000, 80_000)]
    [0.35, 0.35, 0.035, 0.035, 0.0035, 0.0035]

  References:
    Caffe `SGDSolver::GetLearningRate`; the PC-LR baselines of arXiv:1708.07120 (Fig. 1a).
  """
  base_lr = _check_real('base_lr', base_lr, lo=0.0, lo_open=True)
  gamma = _check_real('gamma', gamma, lo=0.0, lo_open=True, hi=1.0)
  try:
    bounds = [_check_int('boundaries', b) for b in boundaries]
  except TypeError:
    raise ValueError(f'boundaries must be a sequence of integers, got {boundaries!r}') from None
  if any(b1 <= b0 for b0, b1 in zip(bounds, bounds[1:])):
    raise ValueError(f'boundaries must be strictly increasing, got {tuple(boundaries)}')
  # Each level computed in float64 then rounded once (gamma**k exact to float32 precision).
  levels = jnp.asarray([base_lr * gamma**k for k in range(len(bounds) + 1)], _F32)
  bounds_arr = jnp.asarray(bounds, jnp.int32).reshape(-1)

  def schedule(step):
    passed = jnp.sum((_step(step) >= bounds_arr).astype(jnp.int32))
    return levels[passed]

  return schedule


def step_decay(base_lr: float, step_size: int, gamma: float) -> optax.Schedule:
  r"""Caffe `lr_policy: "step"`: `lr = base_lr * gamma ** floor(it / step_size)`.

  Args:
    base_lr: initial learning rate (> 0).
    step_size: updates between decays, a positive integer.
    gamma: factor per decay, in (0, 1].

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 learning rate.

  Examples:
    >>> lr = step_decay(0.1, 10, 0.5)
    >>> [float(lr(s)) for s in (0, 9, 10, 25)]
    [0.10000000149011612, 0.10000000149011612, 0.05000000074505806, 0.02500000037252903]

  References:
    Caffe `SGDSolver::GetLearningRate`.
  """
  base_lr = _check_real('base_lr', base_lr, lo=0.0, lo_open=True)
  step_size = _check_int('step_size', step_size)
  gamma = _check_real('gamma', gamma, lo=0.0, lo_open=True, hi=1.0)

  def schedule(step):
    k = (_step(step) // step_size).astype(_F32)
    return _F32(base_lr) * jnp.power(_F32(gamma), k)

  return schedule


def inv(base_lr: float, gamma: float, power: float) -> optax.Schedule:
  r"""Caffe `lr_policy: "inv"`: `lr = base_lr * (1 + gamma * it) ** (-power)`.

  Caffe's MNIST LeNet default is base 0.01, gamma 1e-4, power 0.75.

  Args:
    base_lr: learning rate at update 0 (> 0).
    gamma: per-update rate (>= 0).
    power: decay exponent (>= 0).

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 learning rate.

  Examples:
    >>> lr = inv(0.01, 1e-4, 0.75)
    >>> [round(float(lr(s)), 8) for s in (0, 10_000)]  # 0.01 * 2 ** -0.75
    [0.01, 0.00594604]

  References:
    Caffe `SGDSolver::GetLearningRate`; arXiv:1803.09820 Sec. 5 (LeNet baseline).
  """
  base_lr = _check_real('base_lr', base_lr, lo=0.0, lo_open=True)
  gamma = _check_real('gamma', gamma, lo=0.0)
  power = _check_real('power', power, lo=0.0)

  def schedule(step):
    it = _step(step).astype(_F32)
    return _F32(base_lr) * jnp.power(1 + _F32(gamma) * it, _F32(-power))

  return schedule


def constant(value: float) -> optax.Schedule:
  r"""A constant: `f(step) = value` as a float32 scalar (not weak-typed).

  Args:
    value: the value (finite).

  Returns:
    An `optax.Schedule`.

  Examples:
    >>> m = constant(0.9)
    >>> float(m(0)), float(m(10**6)), m(3).dtype
    (0.8999999761581421, 0.8999999761581421, dtype('float32'))

  References:
    Caffe `lr_policy: "fixed"`; the constant momentum 0.9 of arXiv:1708.07120.
  """
  value = _check_real('value', value)
  # Strongly typed float32 (a weak-typed Python float could change a jitted step's signature).
  return lambda step: jnp.full(jnp.shape(step), value, _F32)


def warmup_cosine(total_steps: int, peak_lr: float, warmup_steps: int, *,
                  end_lr: float = 0.0) -> optax.Schedule:
  r"""Today's common baseline: linear warm-up from 0, then a cosine decay to `end_lr`.

  ::

    lr(k) = peak * k / W                                                     k < W
    lr(k) = end + (peak - end) * (1 + cos(pi * (k - W) / (T - W))) / 2      W <= k <= T

  with W = `warmup_steps` and T = `total_steps` (`optax.warmup_cosine_decay_schedule` with
  init 0 and decay_steps = T, which counts the warm-up). Not one of Smith's policies: it is the
  equal-budget comparison a reader of 2026 asks for.

  Examples:
    >>> lr = warmup_cosine(100, 0.4, 10)
    >>> [round(float(lr(k)), 4) for k in (0, 5, 10, 55, 100)]
    [0.0, 0.2, 0.4, 0.2, 0.0]
  """
  t = _check_int('total_steps', total_steps)
  w = _check_int('warmup_steps', warmup_steps, minimum=0)
  if w >= t:
    raise ValueError(f'warmup_steps={w} must be below total_steps={t}')
  peak = _check_real('peak_lr', peak_lr, lo=0.0, lo_open=True)
  end = _check_real('end_lr', end_lr, lo=0.0)
  return optax.warmup_cosine_decay_schedule(0.0, peak, w, t, end)


# ---------------------------------------------------------------------------------------------
# 2020s schedules: linear decay to zero and warmup-stable-decay (the equal-budget study's arms).


def _warmup_and_total(total_steps, warmup_steps):
  t = _check_int('total_steps', total_steps)
  w = _check_int('warmup_steps', warmup_steps, minimum=0)
  if w >= t:
    raise ValueError(f'warmup_steps={w} must be below total_steps={t}')
  return t, w


def _ramp_up(it: jnp.ndarray, warmup_steps: int, peak: float) -> jnp.ndarray:
  """peak * it / W (0 at it = 0): the linear warm-up; W = 0 gives a flat `peak`."""
  if warmup_steps == 0:
    return jnp.full(it.shape, peak, _F32)
  return _F32(peak) * (it.astype(_F32) / _F32(warmup_steps))


def linear_decay(total_steps: int, peak_lr: float, warmup_steps: int = 0, *,
                 end_lr: float = 0.0) -> optax.Schedule:
  r"""Linear decay to `end_lr` (default zero) at the end of the run, after an optional warm-up.

  With W = `warmup_steps` and T = `total_steps`::

    lr(k) = peak * k / W                                  k < W
    lr(k) = end + (peak - end) * (T - k) / (T - W)        W <= k <= T    (end from k = T on)

  With W = 0 the first update uses `peak` and the LR falls by (peak - end) / T per update, as
  the 2024-2025 CIFAR-10 speed records (airbench94_muon, hiverge) and the budget-aware decay of
  Li et al. (ICLR 2020) and Defazio et al. (arXiv:2310.07831). The last update (k = T - 1)
  uses end + (peak - end) / (T - W).

  Args:
    total_steps: updates in the run (>= 1); the LR reaches `end_lr` at update T.
    peak_lr: the LR at update W (> 0).
    warmup_steps: linear warm-up updates from 0 (>= 0, < total_steps).
    end_lr: the LR reached at update T (>= 0, <= peak_lr).

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 learning rate.

  Examples:
    >>> lr = linear_decay(10, 1.0)
    >>> [round(float(lr(k)), 6) for k in (0, 1, 5, 9, 10, 12)]
    [1.0, 0.9, 0.5, 0.1, 0.0, 0.0]
    >>> lr = linear_decay(10, 1.0, 2)
    >>> [round(float(lr(k)), 6) for k in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]

  References:
    Li, Yumer & Ramanan, "Budgeted Training", ICLR 2020; Defazio et al., arXiv:2310.07831.
  """
  t, w = _warmup_and_total(total_steps, warmup_steps)
  peak = _check_real('peak_lr', peak_lr, lo=0.0, lo_open=True)
  end = _check_real('end_lr', end_lr, lo=0.0, hi=peak)

  def schedule(step):
    it = jnp.minimum(_step(step), t)
    # Integer numerator (T - k): exact at both ends of the decay.
    frac = (t - it).astype(_F32) / _F32(t - w)
    return jnp.where(it < w, _ramp_up(it, w, peak), _F32(end) + _F32(peak - end) * frac)

  return schedule


COOLDOWNS = ('linear', '1-sqrt')


def warmup_stable_decay(total_steps: int, peak_lr: float, warmup_steps: int = 0, *,
                        decay_fraction: float = 0.2, cooldown: str = '1-sqrt',
                        end_lr: float = 0.0) -> optax.Schedule:
  r"""Warmup-stable-decay (WSD): warm up, hold `peak_lr`, cool down to `end_lr` at the end.

  With W = `warmup_steps`, T = `total_steps`, D = round(`decay_fraction` T) cooldown updates
  and S = T - D where the cooldown starts::

    lr(k) = peak * k / W                                  k < W
    lr(k) = peak                                          W <= k < S
    lr(k) = end + (peak - end) * c((k - S) / D)           S <= k <= T    (end from k = T on)

  with the cooldown shape c(t) = 1 - t ('linear') or 1 - sqrt(t) ('1-sqrt', which Hägele et al.
  found better than linear). `decay_fraction=0` is the warm-up + constant schedule that
  schedule-free optimizers take (`optax.warmup_constant_schedule`).

  Args:
    total_steps: updates in the run (>= 1).
    peak_lr: the stable LR (> 0).
    warmup_steps: linear warm-up updates from 0 (>= 0, <= S).
    decay_fraction: fraction of the run spent cooling down, in [0, 1].
    cooldown: '1-sqrt' | 'linear'.
    end_lr: the LR reached at update T (>= 0, <= peak_lr).

  Returns:
    An `optax.Schedule` mapping the update counter to a float32 learning rate.

  Examples:
    >>> lr = warmup_stable_decay(20, 1.0, 2, decay_fraction=0.2)  # S = 16, D = 4
    >>> [round(float(lr(k)), 6) for k in (0, 1, 2, 15, 16, 17, 19, 20)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.133975, 0.0]
    >>> lin = warmup_stable_decay(20, 1.0, decay_fraction=0.2, cooldown='linear')
    >>> [round(float(lin(k)), 6) for k in (0, 16, 17, 19, 20)]
    [1.0, 1.0, 0.75, 0.25, 0.0]

  References:
    Hu et al. (MiniCPM), arXiv:2404.06395; Hägele et al., "Scaling Laws and Compute-Optimal
    Training Beyond Fixed Training Durations", NeurIPS 2024 (arXiv:2405.18392).
  """
  t, w = _warmup_and_total(total_steps, warmup_steps)
  peak = _check_real('peak_lr', peak_lr, lo=0.0, lo_open=True)
  end = _check_real('end_lr', end_lr, lo=0.0, hi=peak)
  fraction = _check_real('decay_fraction', decay_fraction, lo=0.0, hi=1.0)
  cooldown = _check_choice('cooldown', cooldown, COOLDOWNS)
  d = int(round(fraction * t))
  s = t - d
  if w > s:
    raise ValueError(f'warmup_steps={w} overlaps the cooldown, which starts at update {s} '
                     f'(decay_fraction={fraction} of total_steps={t}): need warmup_steps <= {s}')

  def schedule(step):
    it = jnp.minimum(_step(step), t)
    if d == 0:
      stable = jnp.full(it.shape, peak, _F32)
      return jnp.where(it < w, _ramp_up(it, w, peak), stable)
    done = jnp.clip(it - s, 0, d)
    if cooldown == 'linear':  # integer numerator: exact at both ends
      shape = (d - done).astype(_F32) / _F32(d)
    else:
      shape = 1 - jnp.sqrt(done.astype(_F32) / _F32(d))
    decayed = _F32(end) + _F32(peak - end) * shape
    decayed = jnp.where(it >= t, _F32(end), decayed)  # exactly end_lr, whatever XLA fuses
    return jnp.where(it < w, _ramp_up(it, w, peak), decayed)

  return schedule


def warmup_constant(total_steps: int, peak_lr: float, warmup_steps: int = 0) -> optax.Schedule:
  r"""Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then `peak_lr` to the end.

  ::

    lr(k) = peak * k / W        k < W
    lr(k) = peak                k >= W

  `warmup_stable_decay` without a cooldown: the LR a schedule-free optimizer takes
  (`optax.warmup_constant_schedule(0, peak, W)`, on superconv's 0-based update counter).

  Examples:
    >>> lr = warmup_constant(10, 0.5, 4)
    >>> [round(float(lr(k)), 6) for k in (0, 2, 4, 9, 20)]
    [0.0, 0.25, 0.5, 0.5, 0.5]
  """
  return warmup_stable_decay(total_steps, peak_lr, warmup_steps, decay_fraction=0.0)
