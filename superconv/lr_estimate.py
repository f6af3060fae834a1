r"""The paper's Hessian-free estimate of the optimal learning rate (Smith & Topin 2017, Sec. 4).

Derivation (digest §4). A secant along the step approximates the curvature per weight, giving
the AdaSecant-style per-weight optimal LR

  eps* = (theta_{i+1} - theta_i) / (grad f(theta_{i+1}) - grad f(theta_i)).

Plain SGD, theta_{j+1} = theta_j - eps_j grad f(theta_j), gives the gradients from the weights,
grad f(theta_j) = (theta_j - theta_{j+1}) / eps_j, so only three consecutive snapshots are needed:

  eps* = (theta_{i+1} - theta_i) / ((theta_{i+1} - theta_{i+2}) / eps_{i+1}
                                     - (theta_i - theta_{i+1}) / eps_i)

and with one LR eps for both updates (the paper's formula)

  eps* = eps (theta_{i+1} - theta_i) / (2 theta_{i+1} - theta_i - theta_{i+2}).

The global estimate sums absolute values over every weight before dividing, which keeps it
positive:

  eps*_global = eps * sum |theta_{i+1} - theta_i| / sum |2 theta_{i+1} - theta_i - theta_{i+2}|.

On a quadratic f = 1/2 sum_k a_k theta_k^2 under plain gradient descent the per-weight estimate is
exactly 1 / a_k for every LR (the Newton step), and the global one is
sum_k a_k |theta_k| / sum_k a_k^2 |theta_k| (`tests/test_lr_estimate.py`).

The authors' scripts print an exponential moving average m <- 0.9 m + 0.1 eps*_global, starting
from m = 0.1 (`ema_estimates`). Their snapshots come from momentum-0.9 SGD with weight decay, so
the displacements are not exactly eps grad f; the estimate is an illustration of the curvature
(the paper reads values of 2-6 for ResNet-56 as flat, wide minima), not a training rule. The
pycaffe sums also ran over BatchNorm running statistics; `estimate_lr` sums over whatever pytree
it is given (superconv passes the trainable parameters only).
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['estimate_lr', 'estimate_lr_per_weight', 'estimate_lr_from_updates', 'ema_update',
           'ema_estimates', 'lr_estimate_metric']

PyTree = Any
_F32 = jnp.float32


def _up(x) -> jax.Array:
  """At least float32 (bfloat16 snapshots are promoted; float64 ones, under x64, are kept)."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, _F32))


def _abs_sum(tree: PyTree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return sum((jnp.sum(jnp.abs(_up(x))) for x in leaves), jnp.zeros((), _F32))


def _diff(b: PyTree, a: PyTree) -> PyTree:
  return jax.tree.map(lambda y, x: _up(y) - _up(x), b, a)


def _second_difference(u_prev: PyTree, u: PyTree, lr_prev, lr) -> PyTree:
  """(theta_{i+1} - theta_{i+2}) / eps_{i+1} - (theta_i - theta_{i+1}) / eps_i from the updates.

  With u_j = theta_{j+1} - theta_j this is (u_prev / lr_prev - u / lr): the difference of the two
  gradients the updates imply (grad f(theta_j) = -u_j / eps_j).
  """
  lr_prev = _up(lr_prev)
  lr = _up(lr)
  return jax.tree.map(lambda a, b: _up(a) / lr_prev - _up(b) / lr, u_prev, u)


def estimate_lr_from_updates(u_prev: PyTree, u: PyTree, lr_prev: float | jax.Array,
                             lr: float | jax.Array | None = None) -> jax.Array:
  r"""Global estimate from two consecutive updates u_i = theta_{i+1} - theta_i and u_{i+1}.

  ::

    eps* = sum |u_i| / sum |u_i / eps_i - u_{i+1} / eps_{i+1}|

  which is `estimate_lr` with theta_{i+1} - theta_i = u_i and theta_{i+2} - theta_{i+1} = u_{i+1}.
  This is the form a train step can compute: optax hands it the update, so it needs to keep only
  the previous update, not two parameter snapshots.

  Args:
    u_prev: update of iteration i (a pytree).
    u: update of iteration i + 1 (same structure).
    lr_prev: LR eps_i that produced `u_prev`.
    lr: LR eps_{i+1} that produced `u` (default: `lr_prev`).

  Returns:
    A scalar (float32, or float64 for float64 inputs); +inf if the two updates imply the same
    gradient (zero curvature), NaN if both updates are zero.

  Examples:
    >>> u0 = {'w': jnp.array([-1.0, -2.0])}
    >>> u1 = {'w': jnp.array([-0.5, -1.0])}   # the step halved: curvature eps a = 1/2
    >>> round(float(estimate_lr_from_updates(u0, u1, 0.1)), 6)
    0.2
  """
  lr = lr_prev if lr is None else lr
  return _abs_sum(u_prev) / _abs_sum(_second_difference(u_prev, u, lr_prev, lr))


def estimate_lr(theta_i: PyTree, theta_i1: PyTree, theta_i2: PyTree,
                lr: float | jax.Array, lr_next: float | jax.Array | None = None) -> jax.Array:
  r"""The paper's global Hessian-free optimal-LR estimate from three consecutive snapshots.

  ::

    eps* = eps * sum |theta_{i+1} - theta_i| / sum |2 theta_{i+1} - theta_i - theta_{i+2}|

  summed over every leaf of the pytrees. With `lr_next` (the LR of the second update, when it
  differs, e.g. during a sweep) the denominator is the exact gradient difference
  sum |(theta_{i+1} - theta_i) / eps_i - (theta_{i+2} - theta_{i+1}) / eps_{i+1}|.

  Pure `jnp`: usable under `jax.jit`. Returns a float32 scalar (call `float()` on the host).

  Precision: the second difference is about eps^2 a theta for curvature a, so float32 snapshots
  lose digits when eps a is small (relative error ~ 1e-7 / (eps a)^2: 0.1 % at eps a = 0.01).
  Float64 snapshots (under `jax.enable_x64`) are kept in float64.

  Args:
    theta_i, theta_i1, theta_i2: parameters at iterations i, i+1, i+2 (same pytree structure).
    lr: the LR eps_i of the update theta_i -> theta_{i+1}.
    lr_next: the LR of theta_{i+1} -> theta_{i+2} (default: `lr`).

  Examples:
    Gradient descent with eps = 0.1 on f = 1/2 (1 x^2 + 4 y^2) from (1, 1): per-weight optima are
    1/1 and 1/4; the global estimate is (1*1 + 4*1) / (1*1 + 16*1) = 5/17.

    >>> a = jnp.array([1.0, 4.0]); eps = 0.1
    >>> t0 = jnp.array([1.0, 1.0]); t1 = t0 - eps * a * t0; t2 = t1 - eps * a * t1
    >>> round(float(estimate_lr(t0, t1, t2, eps)), 6), round(5 / 17, 6)
    (0.294118, 0.294118)
  """
  u_prev = _diff(theta_i1, theta_i)
  u = _diff(theta_i2, theta_i1)
  return estimate_lr_from_updates(u_prev, u, lr, lr_next)


def estimate_lr_per_weight(theta_i: PyTree, theta_i1: PyTree, theta_i2: PyTree,
                           lr: float | jax.Array,
                           lr_next: float | jax.Array | None = None) -> PyTree:
  r"""Per-weight estimate eps (theta_{i+1} - theta_i) / (2 theta_{i+1} - theta_i - theta_{i+2}).

  Signed (negative where the secant sees negative curvature); NaN where both the step and the
  second difference are zero, +-inf where only the second difference is. With `lr_next` the
  denominator is the exact gradient difference, as in `estimate_lr`.

  Returns:
    A pytree like `theta_i` of float32 (float64 for float64 inputs) arrays.

  Examples:
    >>> a = jnp.array([1.0, 4.0]); eps = 0.1
    >>> t0 = jnp.array([1.0, -2.0]); t1 = t0 - eps * a * t0; t2 = t1 - eps * a * t1
    >>> [round(float(v), 5) for v in estimate_lr_per_weight(t0, t1, t2, eps)]  # 1 / a
    [1.0, 0.25]
  """
  lr_next = lr if lr_next is None else lr_next
  u_prev = _diff(theta_i1, theta_i)
  u = _diff(theta_i2, theta_i1)
  return jax.tree.map(lambda n, d: n / d, u_prev, _second_difference(u_prev, u, lr, lr_next))


def ema_update(m: float | jax.Array, estimate: float | jax.Array,
               decay: float = 0.9) -> jax.Array:
  """One step of the authors' smoothing, m <- decay m + (1 - decay) estimate (jit-friendly).

  Examples:
    >>> round(float(ema_update(0.1, 2.1)), 6)
    0.3
  """
  return decay * jnp.asarray(m, _F32) + (1.0 - decay) * jnp.asarray(estimate, _F32)


def ema_estimates(estimates: Iterable[float], decay: float = 0.9,
                  init: float = 0.1) -> np.ndarray:
  """The smoothed series the authors' scripts print: m_k = decay m_{k-1} + (1 - decay) e_k.

  m_0 = init (the scripts: 0.1, decay 0.9).

  Returns m_1 .. m_n (one value per estimate, after its update), float64.

  Examples:
    >>> ema_estimates([2.1, 2.1], decay=0.9, init=0.1).round(6).tolist()
    [0.3, 0.48]
  """
  out = []
  m = float(init)
  for e in estimates:
    m = decay * m + (1.0 - decay) * float(e)
    out.append(m)
  return np.asarray(out, np.float64)


def lr_estimate_metric(u_prev: PyTree, u: PyTree, lr_prev: float | jax.Array,
                       lr: float | jax.Array) -> dict[str, jax.Array]:
  """What a train step can log: the global estimate with its numerator and denominator.

  Computed from the step's optax update `u` = theta_{i+2} - theta_{i+1} and the previous one
  `u_prev` (carried in the train state), with the LRs that produced them. Numerator and
  denominator are returned too (the authors' scripts print them), so a logger can also sum them
  over a window before dividing. Pure `jnp`; the values are identical on every data-parallel
  replica because the updates are.

  Returns:
    {'lr_estimate': eps*, 'lr_estimate_num': sum |u_prev|,
     'lr_estimate_den': sum |u_prev / lr_prev - u / lr|}: float32 scalars.

  Examples:
    >>> m = lr_estimate_metric({'w': jnp.array([-1.0])}, {'w': jnp.array([-0.5])}, 0.1, 0.1)
    >>> {k: round(float(v), 6) for k, v in m.items()}
    {'lr_estimate': 0.2, 'lr_estimate_num': 1.0, 'lr_estimate_den': 5.0}
  """
  num = _abs_sum(u_prev)
  den = _abs_sum(_second_difference(u_prev, u, lr_prev, lr))
  return {'lr_estimate': num / den, 'lr_estimate_num': num, 'lr_estimate_den': den}
