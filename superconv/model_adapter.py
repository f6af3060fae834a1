"""The one place that knows how a model is called: Flax Linen, Flax NNX, or a plain function.

The train step, the evaluator and the range test see a model only through `Adapter`:

  params, batch_stats = adapter.init(key, example_images)
  logits, batch_stats = adapter.apply(params, batch_stats, images, train=True, dropout_key=k)
  logits, _ = adapter.apply(params, batch_stats, images, train=False)

`params` and `batch_stats` are plain pytrees (nested dicts of arrays), so the optimizer, the
weight-decay mask, the checkpoints and the cross-device averaging treat every kind of model
alike. `adapt(model)` picks the adapter:

  * a `flax.linen.Module` (superconv's own models): `model.apply({'params', 'batch_stats'}, x,
    train=..., mutable=['batch_stats'], rngs={'dropout': k})`, with the module's own mode flag
    in place of `train=` (`deterministic=not train`, `training=`) or none;
  * a `flax.nnx.Module` instance (its current weights are the start), or
    `models.nnx_models.NnxSpec` (built from the run's key and the input shape, as superconv's
    registered NNX models are, e.g. 'nnx_lenet'): split into `nnx.Param`
    and `nnx.BatchStat` state; `.train()` / `.eval()` select BN and dropout behaviour; dropout
    streams are reseeded from the step's key at every update, so the run stays a function of
    (seed, step);
  * `PlainModel(apply_fn, variables)`: `apply_fn(variables, x, train) -> logits` with
    `variables = {'params': ..., 'batch_stats': ...}` (batch_stats left unchanged).

Why Linen is superconv's default is written in docs/architecture.md.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Protocol

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp

from superconv.models.nnx_models import NnxSpec


class Adapter(Protocol):
  name: str

  def init(self, key: jax.Array, example: jax.Array) -> tuple[Any, Any]:
    ...

  def apply(self, params, batch_stats, x, *, train: bool,
            dropout_key: jax.Array | None = None) -> tuple[jax.Array, Any]:
    ...


# The mode flags a Linen module's __call__ may take, and the value each has in training.
_MODE_FLAGS = {'train': True, 'training': True, 'is_training': True, 'deterministic': False}


def _mode_flag(module: nn.Module) -> str | None:
  """The mode flag `module.__call__` takes (`_MODE_FLAGS`), or None for a module without one."""
  try:
    names = inspect.signature(type(module).__call__).parameters
  except (TypeError, ValueError):
    return 'train'
  return next((n for n in _MODE_FLAGS if n in names), None)


@dataclasses.dataclass(frozen=True)
class LinenAdapter:
  """A Linen module, called with 'batch_stats' and 'dropout' collections and its own mode flag:
  `train=` (superconv's models), `training=`, `is_training=`, `deterministic=` (flax's
  examples: `deterministic = not train`) or none at all."""
  module: nn.Module

  @property
  def name(self) -> str:
    return type(self.module).__name__

  def _flag(self, train: bool) -> dict:
    flag = _mode_flag(self.module)
    if flag is None:
      return {}
    return {flag: train if _MODE_FLAGS[flag] else not train}

  def init(self, key, example):
    variables = self.module.init({'params': key, 'dropout': key}, example, **self._flag(False))
    return variables['params'], variables.get('batch_stats', {})

  def apply(self, params, batch_stats, x, *, train, dropout_key=None):
    variables = {'params': params, 'batch_stats': batch_stats}
    if not train:
      return self.module.apply(variables, x, **self._flag(False)), batch_stats
    rngs = {} if dropout_key is None else {'dropout': dropout_key}
    logits, mutated = self.module.apply(variables, x, **self._flag(True),
                                        mutable=['batch_stats'], rngs=rngs)
    return logits, mutated.get('batch_stats', {})


class NnxAdapter:
  """An NNX module as (graph, Param state, BatchStat state); RNG streams rebuilt per call.

  From a built module the graph is known at once (its weights are the start); from an
  `NnxSpec` it is known once `init` has built the module for the input shape, which every
  program does first (`step.create_train_state`).
  """

  def __init__(self, model: nnx.Module | NnxSpec):
    self._spec = model if isinstance(model, NnxSpec) else None
    self._module = None if self._spec else model
    self._graph = None
    if self._module is not None:
      self._record(self._module)
    self.name = (self._spec.cls if self._spec else type(model)).__name__

  def _record(self, module: nnx.Module):
    graph, params, stats, rest = nnx.split(module, nnx.Param, nnx.BatchStat, ...)
    is_var = lambda x: isinstance(x, nnx.Variable)
    others = [type(v).__name__ for v in jax.tree.leaves(rest, is_leaf=is_var)
              if not isinstance(v, (nnx.RngKey, nnx.RngCount))]
    if others:
      raise TypeError(f'superconv trains NNX models whose state is nnx.Param, nnx.BatchStat and '
                      f'RNG streams; this one also holds {sorted(set(others))}')
    # Templates (their values are replaced at every call) and the graph, a static object.
    self._graph, self._params, self._stats, self._rest = graph, params, stats, rest
    return params, stats

  def init(self, key, example):
    if self._spec is None:
      params, stats = self._params, self._stats
    else:
      params, stats = self._record(self._spec.build(key, tuple(example.shape[1:])))
    return params.to_pure_dict(), stats.to_pure_dict()

  def _merge(self, params, batch_stats, key) -> nnx.Module:
    """The module with these weights and statistics, its RNG streams started from `key`."""
    if self._graph is None:
      raise RuntimeError(f'{self.name}: call init (create_train_state) before applying it')
    p, s = jax.tree.map(lambda x: x, self._params), jax.tree.map(lambda x: x, self._stats)
    nnx.replace_by_pure_dict(p, params)
    if batch_stats:
      nnx.replace_by_pure_dict(s, batch_stats)
    # The RNG streams are rebuilt in the current trace from the step's key rather than carried
    # in the state: every random draw stays a function of (seed, step), as for Linen models.
    typed = jax.random.wrap_key_data(jnp.zeros((2,), jnp.uint32) if key is None else key)

    def fresh(v):
      if isinstance(v, nnx.RngKey):
        return v.replace(typed)
      if isinstance(v, nnx.RngCount):
        return v.replace(jnp.zeros((), jnp.uint32))
      return v
    rest = jax.tree.map(fresh, self._rest, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(self._graph, p, s, rest)

  def apply(self, params, batch_stats, x, *, train, dropout_key=None):
    module = self._merge(params, batch_stats, dropout_key if train else None)
    if train:
      module.train()
    else:
      module.eval()
    logits = module(x)
    if not train:
      return logits, batch_stats
    return logits, nnx.state(module, nnx.BatchStat).to_pure_dict()


@dataclasses.dataclass(frozen=True)
class PlainModel:
  """A model given as a function: `apply_fn(variables, x, train) -> logits`, and its variables.

  `variables['batch_stats']` (optional) is passed through unchanged: a plain function has no
  way to return updated statistics.
  """
  apply_fn: Callable[..., jax.Array]
  variables: Any

  @property
  def name(self) -> str:
    return getattr(self.apply_fn, '__name__', 'apply_fn')

  def init(self, key, example):
    del key, example
    return self.variables['params'], self.variables.get('batch_stats', {})

  def apply(self, params, batch_stats, x, *, train, dropout_key=None):
    del dropout_key
    return self.apply_fn({'params': params, 'batch_stats': batch_stats}, x, train), batch_stats


def adapt(model: Any) -> Adapter:
  """The adapter for `model` (an adapter is returned as it is)."""
  if isinstance(model, (LinenAdapter, NnxAdapter, PlainModel)):
    return model
  if isinstance(model, nn.Module):
    return LinenAdapter(model)
  if isinstance(model, (nnx.Module, NnxSpec)):
    return NnxAdapter(model)
  raise TypeError(f'cannot train a {type(model).__name__}: pass a flax.linen.Module, a '
                  'flax.nnx.Module, or PlainModel(apply_fn, variables) with apply_fn(variables, '
                  'x, train) -> logits')
