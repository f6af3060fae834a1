"""The pieces of `core.find`'s engine: private device copies that keep the caller's shardings,
the optimizer whose LR (and momentum) the sweep drives, and what a sweep records of its inputs."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax


def _linear(start: float, end: float, num_steps: int) -> Callable:
  """start + (end - start) * clip(s, 0, n) / n: the swept momentum (it may fall)."""
  return lambda s: start + (end - start) * jnp.clip(s, 0, num_steps) / num_steps


def _injected(opt_state) -> dict | None:
  hp = getattr(opt_state, 'hyperparams', None)
  ok = isinstance(hp, dict) and 'learning_rate' in hp and hasattr(opt_state, '_replace')
  return hp if ok else None


def _driven(tx: optax.GradientTransformation, lr_fn: Callable, momentum_fn: Callable | None,
            momentum_name: str | None) -> optax.GradientTransformation:
  """`tx` (an inject_hyperparams transformation) with learning_rate = lr_fn(k) at update k (and
  `momentum_name` = momentum_fn(k)). The update counter is the wrapper's own."""

  def init(params):
    return (jnp.zeros((), jnp.int32), tx.init(params))

  def update(updates, state, params=None):
    count, inner = state
    hp = dict(inner.hyperparams)
    # An injected hyperparameter that is itself a schedule is recomputed by inject_hyperparams
    # from its own count and wins over this value: `_check_lr` catches that.
    hp['learning_rate'] = jnp.asarray(lr_fn(count), jnp.asarray(hp['learning_rate']).dtype)
    if momentum_fn is not None:
      hp[momentum_name] = jnp.asarray(momentum_fn(count), jnp.asarray(hp[momentum_name]).dtype)
    updates, inner = tx.update(updates, inner._replace(hyperparams=hp), params)
    return updates, (count + 1, inner)

  return optax.GradientTransformation(init, update)


def _mesh_sharding(tree) -> NamedSharding | None:
  """A replicated NamedSharding on the mesh of the first NamedSharding'd leaf, if any."""
  for x in jax.tree.leaves(tree):
    s = getattr(x, 'sharding', None)
    if isinstance(x, jax.Array) and isinstance(s, NamedSharding):
      return NamedSharding(s.mesh, P())
  return None


def _place(tree, replicated: NamedSharding | None):
  """Device copies of `tree` that share no buffer with it: a leaf on the mesh keeps its
  sharding, any other leaf is replicated over the mesh (or put on the default device)."""

  def put(x):
    if isinstance(x, jax.Array) and (replicated is None or (
        isinstance(x.sharding, NamedSharding) and x.sharding.mesh == replicated.mesh)):
      return x
    return jax.device_put(np.array(x, copy=True), replicated)

  placed = jax.tree.map(put, tree)
  # The copy is a jitted program's output: owned by XLA, so donating it can never write into
  # the caller's arrays (or host memory the CPU backend aliased from them).
  return jax.jit(lambda t: jax.tree.map(jnp.copy, t))(placed)


def _as_key(key) -> jax.Array:
  if key is None:
    return jax.random.PRNGKey(0)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  return jnp.asarray(key)


def _num_examples(batch) -> int:
  leaves = jax.tree.leaves(batch)
  return int(np.shape(leaves[0])[0]) if leaves and np.ndim(leaves[0]) else 1


def _param_count(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def _shapes(batch) -> Any:
  return jax.tree.map(lambda x: list(np.shape(x)[1:]), batch)


def _reiterable(x, what: str) -> Callable[[int], Iterable]:
  if callable(x) and not hasattr(x, '__iter__'):
    return x
  if iter(x) is x:
    raise TypeError(f'{what} is a one-pass iterator: with repeats > 1 (or re-evaluation) pass a '
                    'sequence or a function seed -> iterable')
  return lambda seed: x


def _check_lr(opt_state, expected: float, step: int) -> None:
  """The LR the optimizer used must be the sweep's: an optimizer whose own schedule overrides
  the injected value would make the whole test meaningless."""
  hp = _injected(opt_state[1])
  used = float(jax.device_get(hp['learning_rate']))
  if not math.isclose(used, expected, rel_tol=1e-4, abs_tol=1e-7):
    raise ValueError(f'the optimizer used LR {used:.6g} at update {step} where the sweep '
                     f'set {expected:.6g}: build it with a numeric learning_rate '
                     '(optax.inject_hyperparams(opt)(learning_rate=0.0, ...)) or pass a '
                     'factory lr -> optimizer')
