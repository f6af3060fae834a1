"""Config -> schedules and optax optimizer, with Caffe's SGD semantics available exactly.

`create_optimizer(config)` returns one `optax.inject_hyperparams` transformation whose two
hyperparameters, `'learning_rate'` and `'momentum'` (Adam's b1 for adam/adamw), are driven by the
schedules of `build_schedules(config)`. After update k the optimizer state holds the values that
update k used; `current_hyperparams(opt_state)` finds them wherever the state is nested.

The update for one step is, in this order (every stage configured by `config.optimizer`)::

  g <- clip_by_global_norm(g, grad_clip_norm)            if grad_clip_norm > 0
  g <- g + weight_decay * mask * w                       coupled L2 (Caffe), before momentum
  u <- direction(g)                                      SGD (Caffe or optax form), Adam, ...
  u <- u - lr * weight_decay * mask * w                  decoupled decay (AdamW, SGDW) instead
  u <- bias_lr_mult * u                                  on conv/dense biases (Caffe lr_mult)
  w <- w + u

`mask` is `decay_mask(params, decay_bias, decay_bn, decay_fc_bias)`.

References:
  Caffe `SGDSolver`/`NesterovSolver` (sgd_solver.cpp, nesterov_solver.cpp); Smith & Topin,
  arXiv:1708.07120; Smith, arXiv:1803.09820; Loshchilov & Hutter, arXiv:1711.05101 (AdamW).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from superconv import schedule_registry
from superconv import schedules
# The registry and its config helpers are plain data (jax-free, for configs and config_lib);
# this module adds the factories. Re-exported so programs need only `optim`.
from superconv.schedule_registry import (SCHEDULES, apply_lr_bounds, schedule_config,
                                         sweep_schedule)

__all__ = [
    'CaffeSgdState', 'SCHEDULES', 'SCHEDULE_FREE', 'apply_lr_bounds', 'build_schedules',
    'caffe_sgd', 'check_schedule', 'create_optimizer', 'current_hyperparams', 'decay_mask',
    'eval_params', 'schedule_config', 'schedule_length', 'sweep_schedule',
]

LR_SCHEDULES = tuple(SCHEDULES)
MOMENTUM_SCHEDULES = ('constant', 'one_cycle', 'cyclical')
OPTIMIZERS = ('sgd', 'adam', 'adamw', 'adagrad', 'adadelta', 'rmsprop', 'schedule_free_sgd',
              'schedule_free_adamw')
# Schedule-free (Defazio et al. 2024): the momentum schedule's value is the interpolation b1,
# and the evaluated point is the average x (`eval_params`), not the gradient point y.
SCHEDULE_FREE = ('schedule_free_sgd', 'schedule_free_adamw')
# Optimizers without a heavy-ball term: their 'momentum' hyperparameter is held at 0.
_NO_MOMENTUM = ('adagrad', 'adadelta', 'rmsprop')


# ---------------------------------------------------------------------------------------------
# Schedules from the config: every per-schedule fact is in `schedule_registry.SCHEDULES`.


def _lr_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  k = schedule_registry.kind(config.schedule.name)
  args = config[k.section]
  missing = [f for f in k.factory_args.values() if f not in args]
  if missing:  # e.g. --config.schedule.name=inv on a CLR config: the dict lacks power
    raise ValueError(f"schedule {config.schedule.name!r} needs config.{k.section}."
                     f"{', '.join(missing)}, which this config's schedule lacks; start from "
                     f'schedule_registry.schedule_config({config.schedule.name!r})')
  kwargs = {kw: args[field] for kw, field in k.factory_args.items()}
  if isinstance(kwargs.get('boundaries'), list):
    kwargs['boundaries'] = tuple(kwargs['boundaries'])
  if k.total_steps_arg:
    kwargs[k.total_steps_arg] = config.num_steps
  return getattr(schedules, k.factory)(**kwargs)


def _momentum_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  m = config.momentum_schedule
  if m.name == 'constant':
    return schedules.constant(m.value)
  if m.name not in MOMENTUM_SCHEDULES:
    raise ValueError(
        f'momentum_schedule.name must be one of {MOMENTUM_SCHEDULES}, got {m.name!r}')
  lr = schedule_registry.momentum_lr_args(config)  # what it mirrors of the LR schedule
  if m.name == 'one_cycle':
    return schedules.one_cycle_momentum(
        config.num_steps, base_momentum=m.min_momentum, max_momentum=m.max_momentum, **lr)
  return schedules.cyclical_momentum(m.max_momentum, m.min_momentum, lr['step_size'])


def build_schedules(config: ml_collections.ConfigDict
                    ) -> tuple[optax.Schedule, optax.Schedule]:
  """`(lr_fn, momentum_fn)` from `config.schedule`, `config.momentum_schedule`, `config.num_steps`.

  LR: `SCHEDULES[schedule.name]` names the factory of `superconv.schedules` and the fields it
  is called with (`schedule_registry.py` lists each schedule's fields; 'lr_range' reads
  `config.lr_range`; 'one_cycle' and 'warmup_cosine' also take num_steps).

  Momentum (`momentum_schedule.name`): 'constant' (value), 'one_cycle' (min/max_momentum over
  num_steps, mirroring the LR 1cycle's pct_start, three_phase and anneal), 'cyclical'
  (max/min_momentum, step_size, 0 meaning schedule.step_size); see
  `schedule_registry.MOMENTUM_FROM_LR`.

  Raises:
    ValueError: unknown name or invalid values; the message names the config section.
  """
  try:
    lr_fn = _lr_schedule(config)
  except ValueError as e:
    section = SCHEDULES[config.schedule.name].section if config.schedule.name in SCHEDULES \
        else 'schedule'
    raise ValueError(f'config.{section} (schedule.name={config.schedule.name!r}): {e}') from e
  try:
    momentum_fn = _momentum_schedule(config)
  except ValueError as e:
    raise ValueError(f'config.momentum_schedule (name={config.momentum_schedule.name!r}): '
                     f'{e}') from e
  return lr_fn, momentum_fn


def schedule_length(config: ml_collections.ConfigDict) -> int | None:
  """Updates the LR schedule is designed for, or None when it has no natural length.

  The registry's length rule: 'triangular': 2 * step_size * num_cycles; 'one_cycle',
  'warmup_cosine' and 'caffe_one_cycle': num_steps (the Caffe 1cycle's floor fills the rest);
  'lr_range': lr_range.num_steps; 'multistep', 'step', 'inv', 'constant': None.
  """
  k = schedule_registry.kind(config.schedule.name)
  length = k.length(config[k.section], config.num_steps)
  return None if length is None else int(length)


def check_schedule(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError, before any compilation, if the schedules do not fit `config.num_steps`.

  Builds both schedules (validating every value through the factories), then applies the
  schedule's registry rule (`ScheduleKind.check`): a CLR's or a sweep's length equals
  num_steps, a Caffe 1cycle's two halves fit in the run, every multistep boundary falls inside
  it. Messages name the fields and the numbers.
  """
  n = config.num_steps
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f'num_steps must be a positive integer, got {n!r}')
  build_schedules(config)
  k = schedule_registry.kind(config.schedule.name)
  k.check(config[k.section], n)


# ---------------------------------------------------------------------------------------------
# Parameter groups.


def _names(path) -> list[str]:
  out = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        out.append(str(getattr(k, attr)))
        break
    else:
      out.append(str(k))
  return out


def _is_norm_module(name: str) -> bool:
  lower = name.lower()
  return 'bn' in lower or 'norm' in lower  # bn1, shortcut_bn, BatchNorm_0, LayerNorm_0


def _kind(path, kernel_ndim: int | None = None) -> str:
  """'norm' (BN scale/bias), 'fc_bias' (a dense layer's bias), 'bias' (a conv bias) or 'weight'.

  A bias belongs to a dense (InnerProduct) layer when its sibling kernel is 2-D ([in, out]);
  conv kernels are 4-D (HWIO).
  """
  names = _names(path)
  leaf, parent = names[-1], (names[-2] if len(names) > 1 else '')
  if leaf in ('scale', 'bias') and _is_norm_module(parent):
    return 'norm'
  if leaf == 'bias':
    return 'fc_bias' if kernel_ndim == 2 else 'bias'
  return 'weight'


def _kinds(params: Any) -> Any:
  """`_kind` of every leaf of `params` (a pytree of strings with its structure)."""

  def kernel_ndim(path):
    node = params
    try:
      for k in path[:-1]:
        node = node[getattr(k, 'key', getattr(k, 'idx', k))]
      return len(getattr(node['kernel'], 'shape', ()))
    except (KeyError, TypeError, IndexError):
      return None

  return jax.tree_util.tree_map_with_path(lambda p, _: _kind(p, kernel_ndim(p)), params)


def decay_mask(params: Any, decay_bias: bool = False, decay_bn: bool = True,
               decay_fc_bias: bool | None = None) -> Any:
  """Which leaves weight decay applies to: a pytree of bools with the structure of `params`.

  Naming convention of the models: conv/dense weights are leaves 'kernel'; conv/dense biases
  'bias'; BN parameters 'scale' and 'bias' directly under a module whose name contains 'bn',
  'BatchNorm' or 'Norm' (case-insensitive). Kernels and any other leaf are decayed (Caffe's
  default decay_mult 1); conv biases only if `decay_bias`; dense (InnerProduct) biases if
  `decay_fc_bias` (None: as `decay_bias`); BN parameters only if `decay_bn`.

  The authors' CIFAR ResNet prototxts give every conv bias `decay_mult: 0` but leave the FC
  bias at Caffe's default 1, so their runs are decay_bias=False, decay_fc_bias=True,
  decay_bn=True (the Scale layers have no param block).

  Args:
    params: a pytree of parameters (nested dicts as Flax produces).
    decay_bias: decay conv biases (the paper's prototxt: decay_mult 0, so False).
    decay_bn: decay BN scale/shift (Caffe Scale layer default decay_mult 1, so True).
    decay_fc_bias: decay dense-layer biases (Caffe InnerProduct default decay_mult 1).

  Returns:
    A pytree of Python bools, usable as an optax mask.

  Examples:
    >>> import numpy as np
    >>> p = {'conv1': {'kernel': np.zeros((3, 3, 1, 2)), 'bias': 2.0},
    ...      'bn1': {'scale': 3.0, 'bias': 4.0}, 'fc': {'kernel': np.zeros((2, 5)), 'bias': 5.0}}
    >>> decay_mask(p, decay_bias=False, decay_bn=True, decay_fc_bias=True)  # doctest: +NORMALIZE_WHITESPACE
    {'bn1': {'bias': True, 'scale': True}, 'conv1': {'bias': False, 'kernel': True},
     'fc': {'bias': True, 'kernel': True}}
  """
  fc = decay_bias if decay_fc_bias is None else decay_fc_bias
  table = {'weight': True, 'bias': decay_bias, 'fc_bias': fc, 'norm': decay_bn}
  return jax.tree.map(lambda kind: table[kind], _kinds(params))


def _bias_mask(params: Any) -> Any:
  """True on conv/dense biases (the leaves Caffe gives lr_mult 2 in the paper's prototxt)."""
  return jax.tree.map(lambda kind: kind in ('bias', 'fc_bias'), _kinds(params))


# ---------------------------------------------------------------------------------------------
# Caffe SGD.


class CaffeSgdState(NamedTuple):
  """Caffe's `history_`: the velocity, which already contains the learning rate."""
  velocity: Any


def caffe_sgd(learning_rate: float | jax.Array, momentum: float | jax.Array,
              nesterov: bool = False) -> optax.GradientTransformation:
  r"""SGD with momentum exactly as Caffe: the learning rate is inside the velocity.

  ::

    v_t = mu v_{t-1} + lr_t g_t
    w_t = w_{t-1} - v_t                                       (SGDSolver)
    w_t = w_{t-1} - ((1 + mu) v_t - mu v_{t-1})               (NesterovSolver)

  `optax.sgd` keeps `t_t = mu t_{t-1} + g_t` and steps `-lr_t t_t`. With a constant LR the two
  are the same (v = lr t); when the LR changes, Caffe's past velocity keeps the LR it was
  accumulated with, while optax rescales the whole trace by the current LR. Under a 1cycle or
  CLR schedule the trajectories therefore differ. Weight decay is not part of this transform
  (Caffe adds `wd * w` to the gradient first: chain `optax.add_decayed_weights` before it).

  Args:
    learning_rate: LR of this update (a scalar; wrap with `optax.inject_hyperparams` to drive
      it from a schedule, as in the example).
    momentum: momentum mu of this update, in [0, 1].
    nesterov: Caffe's Nesterov form.

  Returns:
    An `optax.GradientTransformation` whose updates are to be added to the parameters.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> opt = optax.inject_hyperparams(caffe_sgd)(
    ...     learning_rate=lambda k: jnp.asarray([1., 2., 3.])[k], momentum=0.9)
    >>> w = jnp.zeros(()); state = opt.init(w)
    >>> for _ in range(3):  # gradient 1 each update: v = 1, 0.9 + 2, 0.81 + 1.8 + 3
    ...   u, state = opt.update(jnp.ones(()), state, w)
    ...   print(round(float(u), 5))
    -1.0
    -2.9
    -5.61

  References:
    Caffe sgd_solver.cpp (`ComputeUpdateValue`) and nesterov_solver.cpp; Sutskever et al.,
    ICML 2013.
  """

  def init_fn(params):
    return CaffeSgdState(velocity=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    lr = jnp.asarray(learning_rate)
    mu = jnp.asarray(momentum)
    new_v = jax.tree.map(lambda v, g: (mu * v + lr * g).astype(v.dtype), state.velocity, updates)
    if nesterov:
      step = jax.tree.map(lambda v1, v0: (1 + mu) * v1 - mu * v0, new_v, state.velocity)
    else:
      step = new_v
    out = jax.tree.map(lambda s, g: (-s).astype(g.dtype), step, updates)
    return out, CaffeSgdState(velocity=new_v)

  return optax.GradientTransformation(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------
# The optimizer.


def check_optimizer(o: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first `config.optimizer` field the optimizer cannot take."""
  if o.name not in OPTIMIZERS:
    raise ValueError(f'optimizer.name must be one of {OPTIMIZERS}, got {o.name!r}')
  if o.momentum_form not in ('caffe', 'optax'):
    raise ValueError(f"optimizer.momentum_form must be 'caffe' or 'optax', got {o.momentum_form!r}")
  for field, lo, hi in (('weight_decay', 0, None), ('bias_lr_mult', 0, None),
                        ('grad_clip_norm', 0, None), ('eps', 0, None),
                        ('initial_accumulator', 0, None), ('b2', 0, 1), ('rho', 0, 1)):
    v = o[field]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < lo or (
        hi is not None and v >= hi):
      bound = f'in [{lo}, {hi})' if hi is not None else f'>= {lo}'
      raise ValueError(f'optimizer.{field} must be a number {bound}, got {v!r}')
  if o.name in SCHEDULE_FREE:
    n = o.eval_bn_batches
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
      raise ValueError(f'optimizer.eval_bn_batches must be an integer >= 0, got {n!r}')


def _check_schedule_free(config: ml_collections.ConfigDict) -> None:
  """Schedule-free takes a constant b1 (the state keeps the first one for `eval_params`)."""
  m = config.momentum_schedule
  if m.name != 'constant' or not 0 < m.value < 1:
    raise ValueError(
        f'optimizer.name={config.optimizer.name!r} reads its interpolation b1 from a constant '
        f'momentum_schedule.value in (0, 1); got momentum_schedule.name={m.name!r}, value='
        f'{m.value!r}')


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer of `config.optimizer`, LR and momentum driven by `build_schedules(config)`.

  `optimizer.name`:
    'sgd': momentum SGD, `momentum_form` 'caffe' (`caffe_sgd`: v = mu v + lr g, w -= v) or
      'optax' (`optax.sgd`: t = mu t + g, w -= lr t); `nesterov` for both.
    'adam' / 'adamw': `optax.scale_by_adam(b1=momentum, b2, eps)`; 'adamw' always decouples
      the weight decay.
    'adagrad': `optax.scale_by_rss(initial_accumulator, eps)` (eps inside the sqrt, Caffe adds
      delta outside it).
    'adadelta': `optax.scale_by_adadelta(rho, eps)` (the same recursion as Caffe's, whose rho
      is its `momentum` field).
    'rmsprop': `optax.scale_by_rms(rho, eps, eps_in_sqrt=False)` = Caffe's g / (sqrt(h) + delta).
  AdaGrad, AdaDelta and RMSProp have no heavy-ball term: their 'momentum' hyperparameter is 0
  and `momentum_schedule` is not used.

  Weight decay (`weight_decay`, masked by `decay_mask(params, decay_bias, decay_bn, decay_fc_bias)`) is added to
  the gradient before the direction (Caffe) unless `decoupled_weight_decay` or 'adamw', where
  `lr * weight_decay * w` is subtracted after it. `bias_lr_mult` scales the final update of
  conv/dense biases; `grad_clip_norm > 0` clips the raw gradient's global norm first.

  Returns:
    `optax.inject_hyperparams(...)(learning_rate=lr_fn, momentum=momentum_fn)`: its state's
    `hyperparams` holds float32 'learning_rate' and 'momentum' (see `current_hyperparams`).
  """
  o = config.optimizer
  check_optimizer(o)
  lr_fn, momentum_fn = build_schedules(config)
  if o.name in _NO_MOMENTUM:
    momentum_fn = schedules.constant(0.0)
  if o.name in SCHEDULE_FREE:
    _check_schedule_free(config)
  decoupled = o.decoupled_weight_decay or o.name == 'adamw'
  wd = float(o.weight_decay)

  def mask(params):
    return decay_mask(params, o.decay_bias, o.decay_bn, o.decay_fc_bias)

  def make(learning_rate, momentum) -> optax.GradientTransformation:
    if o.name in SCHEDULE_FREE:
      return _schedule_free(o, learning_rate, momentum, mask)
    parts = []
    if o.grad_clip_norm > 0:
      parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    if wd > 0 and not decoupled:
      parts.append(optax.add_decayed_weights(wd, mask))
    lr_included = False  # Whether the direction already carries the LR (Caffe velocity).
    if o.name == 'sgd' and o.momentum_form == 'caffe':
      parts.append(caffe_sgd(learning_rate, momentum, nesterov=o.nesterov))
      lr_included = True
    elif o.name == 'sgd':
      parts.append(optax.trace(decay=momentum, nesterov=o.nesterov))
    elif o.name in ('adam', 'adamw'):
      parts.append(optax.scale_by_adam(b1=momentum, b2=o.b2, eps=o.eps))
    elif o.name == 'adagrad':
      parts.append(optax.scale_by_rss(initial_accumulator_value=o.initial_accumulator, eps=o.eps))
    elif o.name == 'adadelta':
      parts.append(optax.scale_by_adadelta(rho=o.rho, eps=o.eps))
    else:  # rmsprop
      parts.append(optax.scale_by_rms(decay=o.rho, eps=o.eps, eps_in_sqrt=False))
    if lr_included:
      if wd > 0 and decoupled:
        parts.append(optax.add_decayed_weights(-learning_rate * wd, mask))
    else:
      if wd > 0 and decoupled:
        parts.append(optax.add_decayed_weights(wd, mask))
      parts.append(optax.scale_by_learning_rate(learning_rate))
    if o.bias_lr_mult != 1.0:
      parts.append(optax.masked(optax.scale(o.bias_lr_mult), _bias_mask))
    return optax.chain(*parts)

  return optax.inject_hyperparams(make, hyperparam_dtype=jnp.float32)(
      learning_rate=lr_fn, momentum=momentum_fn)


def _schedule_free(o: ml_collections.ConfigDict, learning_rate, b1, mask
                   ) -> optax.GradientTransformation:
  r"""`optax.contrib.schedule_free` around momentum-free SGD or Adam(W), the LR a scalar.

  With z the base optimizer's iterate, x the average that is evaluated and y the point where
  the gradient is taken (the model's `params`)::

    z_{k+1} = z_k + base_update(grad f(y_k), lr_k)
    c_{k+1} = lr_max^p / sum_{i <= k} lr_max,i^p     (p = 2; lr_max: the largest LR so far)
    x_{k+1} = (1 - c_{k+1}) x_k + c_{k+1} z_{k+1}
    y_{k+1} = b1 x_{k+1} + (1 - b1) z_{k+1}

  `learning_rate` arrives as this update's scalar from `optax.inject_hyperparams`, whose count
  starts at 0 like superconv's update counter. Given a schedule instead, the released optax
  (0.2.8) would read it at its own `step_count`, which starts at 1: the averaging weight of
  update k would use lr(k + 1) while the step uses lr(k) (a warm-up's first weight is then not
  0). Passing the scalar keeps both on lr(k) (tests/test_optim.py checks it against the
  recursion by hand).

  'schedule_free_sgd': base = coupled L2 (Caffe, `weight_decay` x mask) then -lr g, as
  `optax.contrib.schedule_free_sgd`; 'schedule_free_adamw': base = RMS scaling with bias
  correction, decoupled decay, then -lr, as `optax.contrib.schedule_free_adamw`.
  """
  parts = []
  if o.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  wd = float(o.weight_decay)
  if o.name == 'schedule_free_sgd':
    if wd > 0:
      parts.append(optax.add_decayed_weights(wd, mask))
  else:
    parts.append(optax.scale_by_rms(decay=o.b2, eps=o.eps, eps_in_sqrt=False,
                                    bias_correction=True))
    if wd > 0:
      parts.append(optax.add_decayed_weights(wd, mask))
  parts.append(optax.scale_by_learning_rate(learning_rate))
  if o.bias_lr_mult != 1.0:
    parts.append(optax.masked(optax.scale(o.bias_lr_mult), _bias_mask))
  return optax.contrib.schedule_free(optax.chain(*parts), learning_rate=learning_rate, b1=b1)


def _find_schedule_free(state: Any) -> Any:
  if isinstance(state, optax.contrib.ScheduleFreeState):
    return state
  if isinstance(state, Mapping):
    children = list(state.values())
  elif isinstance(state, (tuple, list)):
    children = list(state)
  else:
    children = [getattr(state, 'inner_state', None)] if hasattr(state, 'inner_state') else []
  for child in children:
    found = _find_schedule_free(child)
    if found is not None:
      return found
  return None


def eval_params(opt_state: Any, params: Any) -> Any:
  """The weights to evaluate: schedule-free's average x, else `params` unchanged.

  For a schedule-free state (found anywhere in `opt_state`), `params` is the gradient point
  y = b1 x + (1 - b1) z, so x = (y - (1 - b1) z) / b1
  (`optax.contrib.schedule_free_eval_params`). Pure: usable under `jax.jit`.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> tx = optax.contrib.schedule_free(optax.sgd(1.0), learning_rate=1.0, b1=0.5)
    >>> y = jnp.asarray(1.0); state = tx.init(y)
    >>> u, state = tx.update(jnp.asarray(1.0), state, y)  # z: 1 -> 0, x: 1 -> 0 (c = 1)
    >>> y = y + u; float(y), float(eval_params(state, y))
    (0.0, 0.0)
    >>> eval_params({'no': 'schedule-free'}, 3.0)
    3.0
  """
  sf = _find_schedule_free(opt_state)
  if sf is None:
    return params
  return optax.contrib.schedule_free_eval_params(sf, params)


def _find_hyperparams(state: Any) -> Mapping[str, jax.Array] | None:
  hp = getattr(state, 'hyperparams', None)
  if isinstance(hp, Mapping) and 'learning_rate' in hp:
    return hp
  if isinstance(state, Mapping):
    children = list(state.values())
  elif isinstance(state, (tuple, list)):  # Also NamedTuple states (chain, masked, ...).
    children = list(state)
  else:
    children = []
  for child in children:
    found = _find_hyperparams(child)
    if found is not None:
      return found
  return None


def current_hyperparams(opt_state: Any) -> dict[str, jax.Array]:
  """`{'lr', 'learning_rate', 'momentum'}` of the last update, found anywhere in `opt_state`.

  'lr' and 'learning_rate' are the same array (both spellings are in use by callers).

  Looks for the first `optax.inject_hyperparams` state (depth first) in a possibly nested
  state (e.g. inside `optax.chain` or `optax.MultiSteps`). 'momentum' is Adam's b1 for Adam,
  0 for optimizers without momentum, and NaN if the injected transform has none.

  Raises:
    ValueError: when no injected learning rate is found.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> opt = optax.chain(optax.inject_hyperparams(caffe_sgd)(learning_rate=0.5, momentum=0.9))
    >>> hp = current_hyperparams(opt.init(jnp.zeros(3)))
    >>> float(hp['lr']), round(float(hp['momentum']), 6)
    (0.5, 0.9)
  """
  hp = _find_hyperparams(opt_state)
  if hp is None:
    raise ValueError('no optax.inject_hyperparams state with a learning_rate in opt_state')
  momentum = hp['momentum'] if 'momentum' in hp else jnp.full((), jnp.nan, jnp.float32)
  return {'lr': hp['learning_rate'], 'learning_rate': hp['learning_rate'], 'momentum': momentum}
