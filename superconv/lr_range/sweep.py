"""The sweep of an LR range test, and its two entry points: `run(config)` and `range_test(...)`.

Both build the training run's engine (`superconv.step`: state, jitted SPMD step, one update per
dispatch) and share one `_sweep`: it dispatches the updates, moves each update's loss off the
device at evaluation points only (dispatch stays asynchronous), evaluates every
`eval_every_steps`, stops early on divergence, and reads the curves (`lr_range.reading`).
"""

from __future__ import annotations

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

from superconv import inputs as inputs_lib
from superconv import metrics as metrics_lib
from superconv import model_adapter
from superconv import optim
from superconv import schedules
from superconv import sharding
from superconv import step as step_lib
from superconv.lr_range.reading import _LossWatch, suggest, suggest_from_loss
from superconv.lr_range.result import RangeTestResult


def _sweep(state: step_lib.TrainState, train_fn, pop_loss, feed, evaluator,
           lr_fn: Callable, *, num_steps: int, eval_every: int, smoothing: float,
           diverge_factor: float, settings: dict, suggest_kw: dict,
           progress: bool) -> RangeTestResult:
  """Runs the sweep from `state` (consumed: donated to the train step) and reads it.

  `feed` yields each update's input (`inputs.MemoryFeed` / `inputs.StreamFeed`); `evaluator`
  maps a state to {'eval_accuracy', 'eval_loss', ...}. Both entry points (`run`, `range_test`)
  come here, with the settings of `_settings`.
  """
  t0 = time.perf_counter()
  bar = None
  if progress:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=num_steps, unit='step', dynamic_ncols=True, desc='lr range')
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
    if len(evals) == 1:
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


def _settings(*, min_lr, max_lr, num_steps, mode, eval_every, smoothing, diverge_factor,
              batch_size, model, **extra) -> dict:
  """What a sweep ran with, as saved in lr_range.json (both entry points)."""
  return {'min_lr': float(min_lr), 'max_lr': float(max_lr), 'num_steps': int(num_steps),
          'mode': mode, 'eval_every_steps': int(eval_every), 'smoothing': float(smoothing),
          'diverge_factor': float(diverge_factor), 'batch_size': int(batch_size),
          'model': model, **extra}


def _suggest_kw(min_lr_div_clr: float, min_lr_div_1cycle: float) -> dict:
  return {'min_lr_div_clr': float(min_lr_div_clr), 'min_lr_div_1cycle': float(min_lr_div_1cycle)}



def run(config: ml_collections.ConfigDict, workdir: str) -> RangeTestResult:
  """The LR range test of a resolved config (`configure.resolve`, mode 'lr_range').

  The training run's pieces on the same ('data',) mesh: its data (`inputs.open_inputs`, in
  memory or streamed), model, optimizer and state (`step`), the schedule 'lr_range'. Writes the
  workdir's files (`RangeTestResult.save`) and prints the one-line summary. No checkpoints: a
  sweep is short, rerun it.
  """
  os.makedirs(workdir, exist_ok=True)
  metrics_lib.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  r = config.lr_range
  mesh = sharding.make_mesh()
  inputs = inputs_lib.open_inputs(config)
  model = step_lib.build_model(config, inputs.num_classes)
  tx = optim.create_optimizer(config)
  lr_fn, _ = optim.build_schedules(config)
  spec = step_lib.StepSpec.from_config(config)
  state = step_lib.create_train_state(model, tx, jax.random.PRNGKey(config.seed),
                                      inputs.image_shape, mesh)
  feed, evaluator = inputs.feed(mesh), inputs.evaluator(model, mesh, spec)
  logging.info('LR range test: %s, LR %g -> %g (%s) over %d updates, batch %d, %d devices.',
               config.model.name, r.min_lr, r.max_lr, r.mode, r.num_steps, config.batch_size,
               mesh.devices.size)
  settings = _settings(
      min_lr=r.min_lr, max_lr=r.max_lr, num_steps=r.num_steps, mode=r.mode,
      eval_every=r.eval_every_steps, smoothing=r.smoothing, diverge_factor=r.diverge_factor,
      batch_size=config.batch_size, model=config.model.name, dataset=config.data.name,
      optimizer=config.optimizer.name, momentum=config.momentum_schedule.to_dict(),
      weight_decay=float(config.optimizer.weight_decay), seed=int(config.seed))
  with contextlib.closing(feed):
    result = _sweep(state, step_lib.make_train_fn(model, tx, mesh, spec, 1),
                    step_lib.make_pop_loss(mesh), feed, evaluator, lr_fn,
                    num_steps=int(r.num_steps), eval_every=int(r.eval_every_steps),
                    smoothing=float(r.smoothing), diverge_factor=float(r.diverge_factor),
                    settings=settings, suggest_kw=_suggest_kw(r.min_lr_div_clr,
                                                              r.min_lr_div_1cycle),
                    progress=jax.process_index() == 0 and config.progress_bar)
  result.save(workdir)
  if jax.process_index() == 0:
    print(result.summary(), flush=True)
  return result


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
               variables: dict | None, train_data: tuple[Any, Any], eval_data: tuple[Any, Any], *,
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
    model: a Flax Linen module (called as `model.apply({'params', 'batch_stats'}, x,
      train=bool, mutable=['batch_stats'], rngs={'dropout': k})`), a `flax.nnx.Module` (its
      own weights are the start; the module itself is not modified), or
      `model_adapter.PlainModel(apply_fn, variables)` for a function `apply_fn(variables, x,
      train) -> logits`.
    optimizer: either a factory `learning_rate -> optax.GradientTransformation` (it receives
      each update's LR as a scalar array, e.g. `lambda lr: optax.sgd(lr, momentum=0.9)`), or a
      transformation built with `optax.inject_hyperparams(...)(learning_rate=<number>, ...)`,
      whose learning_rate the sweep overrides at every update.
    variables: {'params': ..., 'batch_stats': ... (optional)} to start from; None for an NNX
      module or a PlainModel, which carry their own.
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
  mesh = sharding.make_mesh(devices)
  adapter = model_adapter.adapt(model)
  lr_fn = schedules.lr_range(min_lr, max_lr, num_steps, mode=mode)
  eval_every = int(eval_every_steps or max(1, num_steps // 20))
  if variables is None:
    if isinstance(adapter, model_adapter.LinenAdapter):
      raise ValueError('a Linen module needs its variables: pass {"params": ..., '
                       '"batch_stats": ...} (e.g. from model.init)')
    variables = dict(zip(('params', 'batch_stats'), adapter.init(None, None)))
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
  host_state = jax.device_get(step_lib.new_state(
      params, batch_stats, _SweptState(np.zeros((), np.int32), _private_copy(start)),
      np.array(key, copy=True)))
  replicated = NamedSharding(mesh, P())
  # A jitted copy: the state is owned by XLA, so donating it can never write into host memory
  # that the CPU backend may have aliased from the caller's numpy arrays.
  state = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=replicated)(
      sharding.replicate(host_state, mesh))
  data = sharding.replicate({'images': images, 'labels': np.asarray(labels, np.int32),
                          'mean': np.asarray(mean, np.float32)}, mesh)
  spec = step_lib.StepSpec(batch_size=batch_size, mirror=mirror, crop_padding=crop_padding,
                           scale=scale, dtype=jnp.float32)
  evaluator = inputs_lib.Evaluator(adapter, mesh, spec, np.asarray(eval_images),
                              np.asarray(eval_labels, np.int32), np.asarray(mean, np.float32),
                              eval_batch_size)
  settings = _settings(min_lr=min_lr, max_lr=max_lr, num_steps=num_steps, mode=mode,
                       eval_every=eval_every, smoothing=smoothing, diverge_factor=diverge_factor,
                       batch_size=batch_size, model=adapter.name)
  return _sweep(state, step_lib.make_train_fn(adapter, tx, mesh, spec, 1),
                step_lib.make_pop_loss(mesh), itertools.repeat(data), evaluator, lr_fn,
                num_steps=int(num_steps), eval_every=eval_every, smoothing=smoothing,
                diverge_factor=diverge_factor, settings=settings,
                suggest_kw={**_suggest_kw(min_lr_div_clr, min_lr_div_1cycle), **suggest_kw},
                progress=progress)
