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
from superconv import storage
from superconv.data import sources
from superconv.lr_range.reading import _LossWatch, suggest, suggest_from_loss, suggest_from_valley
from superconv.lr_range.result import RangeTestResult
from superconv.lr_range.result import combine


def _sweep(state: step_lib.TrainState | step_lib.PackedState, train_fn, pop_loss, feed, evaluator,
           lr_fn: Callable, *, num_steps: int, eval_every: int, smoothing: float,
           diverge_factor: float, settings: dict, suggest_kw: dict, progress: bool,
           reading: str = 'accuracy') -> RangeTestResult:
  """Runs the sweep from `state` (consumed: donated to the train step) and reads it.

  `feed` yields each update's input (`inputs.MemoryFeed` / `inputs.StreamFeed`); `evaluator`
  maps a state to {'eval_accuracy', 'eval_loss', ...}. Both entry points (`run`, `range_test`)
  come here, with the settings of `_settings`. `state` is in the form `train_fn` takes (packed
  on accelerators, `step.packs_by_default`); evaluations and the LR check read its pytree form.
  The suggestion: `suggest` of the accuracy, or for reading='loss' the valley (fastai's).
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
    r = evaluator(step_lib.as_state(state))
    evals.append((step, lrs[step], r['eval_accuracy'], r['eval_loss']))

  evaluate(0)
  step = 0
  # XLA:CPU runs every device's share of a program on one shared thread pool: with many
  # programs in flight, an all-reduce can wait on a device thread busy with a later one until
  # its rendezvous aborts the process (seen: 4 CPU devices on 2 cores, 100 updates queued).
  # Waiting on every 16th loss bounds what is in flight; accelerators are not throttled.
  throttle = 16 if jax.default_backend() == 'cpu' and jax.local_device_count() > 1 else 0
  while step < num_steps:
    state = train_fn(state, next(feed))
    loss, state = pop_loss(state)
    pending.append(loss)
    step += 1
    if throttle and step % throttle == 0:
      loss.block_until_ready()
    if step % eval_every and step < num_steps:
      continue
    for x in jax.device_get(pending):
      losses.append(float(x))
      smoothed.append(watch.push(float(x)))
    pending = []
    if len(evals) == 1:
      # The LR the optimizer actually used must be the sweep's: an optimizer whose own schedule
      # overrides the injected value would make the whole test meaningless.
      used = float(jax.device_get(optim.current_hyperparams(
          step_lib.as_state(state).opt_state)['learning_rate']))
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
  lsug = suggest_from_loss(lrs[:len(losses)], smoothed, stop=watch.diverged_at)
  sug = (suggest_from_valley(lsug, suggest_kw['min_lr_div_clr'], suggest_kw['min_lr_div_1cycle'])
         if reading == 'loss' else suggest(ev[:, 1], acc, stop_lr=stop_lr, **suggest_kw))
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


def _suggest_kw(min_lr_div_clr: float, min_lr_div_1cycle: float, **more) -> dict:
  return {'min_lr_div_clr': float(min_lr_div_clr), 'min_lr_div_1cycle': float(min_lr_div_1cycle),
          **more}


def run(config: ml_collections.ConfigDict, workdir: str) -> RangeTestResult:
  """The LR range test of a resolved config (`configure.resolve`, mode 'lr_range').

  The training run's pieces on the same ('data',) mesh: its data (`inputs.open_inputs`, in
  memory or streamed), model, optimizer and state (`step`), the schedule 'lr_range'. Evaluates
  on the split `lr_range.eval_split` names ('validation': `lr_range.eval_examples` training
  examples held out, the same for every seed; 'test': the paper's reading). With
  `lr_range.repeats` = k > 1, k sweeps from the same initial weights with different data
  orders; the median reading is the suggestion (`result.combine`), read as `lr_range.reading`
  says ('accuracy' or 'loss', see `_sweep`). Writes the workdir's files
  (`RangeTestResult.save`) and prints the one-line summary. No checkpoints: a sweep is short,
  rerun it.
  """
  storage.makedirs(workdir)  # a local folder or an object store (gs://...)
  metrics_lib.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  r = config.lr_range
  mesh = sharding.make_mesh()
  inputs = inputs_lib.open_inputs(config, eval_split=r.eval_split,
                                  eval_examples=int(r.eval_examples),
                                  eval_seed=int(r.eval_seed))
  model = step_lib.build_model(config, inputs.num_classes)
  tx = optim.create_optimizer(config)
  lr_fn, _ = optim.build_schedules(config)
  spec = step_lib.StepSpec.from_config(config)
  feed, evaluator = inputs.feed(mesh), inputs.evaluator(model, mesh, spec)
  use_packed = step_lib.packs_by_default()
  train_fn = step_lib.make_train_fn(model, tx, mesh, spec, 1, packed=use_packed)
  pop_loss = step_lib.make_pop_loss(mesh)
  logging.info('LR range test: %s, LR %g -> %g (%s) over %d updates, batch %d, %d devices, '
               '%d repeat(s), read on the %s split.', config.model.name, r.min_lr, r.max_lr,
               r.mode, r.num_steps, config.batch_size, mesh.devices.size, r.repeats,
               r.eval_split)
  settings = _settings(
      min_lr=r.min_lr, max_lr=r.max_lr, num_steps=r.num_steps, mode=r.mode,
      eval_every=r.eval_every_steps, smoothing=r.smoothing, diverge_factor=r.diverge_factor,
      batch_size=config.batch_size, model=config.model.name, dataset=config.data.name,
      optimizer=config.optimizer.name, momentum=config.momentum_schedule.to_dict(),
      weight_decay=float(config.optimizer.weight_decay), seed=int(config.seed),
      eval_split=r.eval_split, eval_examples=int(evaluator.num_examples),
      repeats=int(r.repeats), config=config.to_dict())
  results = []
  with contextlib.closing(feed):
    for i in range(int(r.repeats)):
      state = step_lib.create_train_state(model, tx, jax.random.PRNGKey(config.seed),
                                          inputs.image_shape, mesh)
      if i:  # same initial weights, another data order (and augmentation, dropout)
        state = state.replace(key=jax.random.fold_in(state.key, i))
      results.append(_sweep(
          step_lib.hold(state, use_packed), train_fn, pop_loss, feed, evaluator, lr_fn,
          num_steps=int(r.num_steps), eval_every=int(r.eval_every_steps),
          smoothing=float(r.smoothing), diverge_factor=float(r.diverge_factor),
          settings={**settings, 'repeat': i},
          suggest_kw=_suggest_kw(r.min_lr_div_clr, r.min_lr_div_1cycle,
                                 min_rise=float(r.min_rise)),
          progress=jax.process_index() == 0 and config.progress_bar, reading=r.reading))
  result = combine(results)
  result.settings = settings
  if r.run_steps:  # the run it configures is known (a training config swept)
    spec = sources.SPECS[config.data.name]
    test_size = config.data.fake_num_test if config.data.source == 'fake' else spec.test_size
    result.cost = sweep_cost(results, batch_size=config.batch_size,
                             eval_examples=evaluator.num_examples, run_steps=int(r.run_steps),
                             run_eval_every=int(config.eval_every_steps),
                             run_eval_examples=int(test_size))
  result.save(workdir)
  if jax.process_index() == 0:
    print(result.summary(), flush=True)
  return result


# A forward pass costs about a third of a training update (forward + backward ~ 3 forwards).
EVAL_COST = 1 / 3


def sweep_cost(results: Sequence[RangeTestResult], *, batch_size: int, eval_examples: int,
               run_steps: int, run_eval_every: int, run_eval_examples: int) -> dict:
  r"""The sweeps' compute as a fraction of the training run they configure.

  In training-image equivalents (an evaluated image counts `EVAL_COST` = 1/3 of a trained one):

    sweeps = sum_i (updates_i * batch + evaluations_i * eval_examples / 3)
    run    = run_steps * batch + (run_steps // run_eval_every + 1) * run_eval_examples / 3

  (`run_eval_every` 0: one evaluation at the end.)

  Examples:
    >>> mk = lambda n, m: RangeTestResult(np.zeros(n), *[np.zeros(1)] * 2, np.zeros(m),
    ...                                   *[np.zeros(1)] * 3, suggestion={}, loss_suggestion={})
    >>> c = sweep_cost([mk(100, 11)] * 3, batch_size=100, eval_examples=3000, run_steps=10_000,
    ...                run_eval_every=1000, run_eval_examples=9000)
    >>> c['sweep_images'], c['run_images'], round(c['fraction'], 4)
    (63000.0, 1033000.0, 0.061)
  """
  sweeps = sum(len(r.lrs) * batch_size + len(r.eval_steps) * eval_examples * EVAL_COST
               for r in results)
  evals = (run_steps // run_eval_every + 1) if run_eval_every else 1
  run = run_steps * batch_size + evals * run_eval_examples * EVAL_COST
  return {'sweep_images': float(sweeps), 'run_images': float(run),
          'fraction': float(sweeps / run) if run else None, 'run_steps': int(run_steps),
          'counted': 'training-image equivalents; an evaluated image = 1/3 of a trained one'}


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


# The two readings a Python user can ask for (`range_test(preset=...)`): the sweep's defaults
# and which reading becomes the suggestion.
PRESETS = {
    # Smith (2017), the paper's test: a linear sweep over a range the user chooses, read on the
    # held-out accuracy (`reading.suggest`), giving CLR and 1cycle (min, max).
    'smith': {'mode': 'linear', 'reading': 'accuracy'},
    # fastai's `lr_find`: an exponential sweep 1e-7 -> 10 over 100 updates, read on the training
    # loss (the middle of its longest descent, "valley"); no held-out data needed.
    'fastai': {'mode': 'exp', 'min_lr': 1e-7, 'max_lr': 10.0, 'num_steps': 100,
               'reading': 'loss'},
}


def range_test(model, optimizer: optax.GradientTransformation | Callable[[Any], Any],
               variables: dict | None, train_data: tuple[Any, Any],
               eval_data: tuple[Any, Any] | None = None, *, batch_size: int,
               preset: str = 'smith', min_lr: float | None = None,
               max_lr: float | None = None, num_steps: int | None = None,
               mode: str | None = None, repeats: int = 1, eval_every_steps: int | None = None,
               eval_batch_size: int = 1000, key: jax.Array | None = None, opt_state: Any = None,
               mean: Any = None, scale: float = 1.0, mirror: bool = False,
               crop_padding: int = 0, smoothing: float = 0.98, diverge_factor: float = 4.0,
               min_lr_div_clr: float = 4.0, min_lr_div_1cycle: float = 10.0,
               devices: Sequence[Any] | None = None, progress: bool = False,
               **suggest_kw) -> RangeTestResult:
  r"""LR range test of a user's model (Linen, NNX or a function), optax optimizer and data.

  The caller's state is left untouched: weights, BN statistics, optimizer state and key are
  copied to private device buffers before the sweep, and only those are donated.

  Presets (`PRESETS`). 'smith' (default): a linear sweep over the (min_lr, max_lr) you give,
  read on the held-out accuracy by the paper's rule; use it to set a CLR or 1cycle's bounds
  when held-out data is at hand and a few hundred updates are affordable. 'fastai': an
  exponential sweep 1e-7 -> 10 over 100 updates read on the training loss (valley); use it for
  a quick first value of a 1cycle's max_lr, knowing that a loss reading is noisier and, with
  BN, often points early (see the package docstring).

  Example (a plain function; any Linen or NNX model works the same way):

    >>> import numpy as np, optax
    >>> from superconv import lr_range, model_adapter
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 64).astype(np.int32)
    >>> x = (rng.normal(size=(64, 1, 1, 2)) + 2.0 * y[:, None, None, None]).astype(np.float32)
    >>> model = model_adapter.PlainModel(
    ...     lambda v, x, train: x.reshape(len(x), -1) @ v['params']['w'],
    ...     {'params': {'w': np.zeros((2, 2), np.float32)}})
    >>> r = lr_range.range_test(model, optax.sgd, None, (x, y), (x, y), batch_size=16,
    ...                         min_lr=0.0, max_lr=1.0, num_steps=20, eval_every_steps=2)
    >>> r.suggestion['method'] in ('peak', 'fall', 'flat-largest'), len(r.eval_accuracy)
    (True, 11)

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
    eval_data: (images, labels) held out, evaluated every `eval_every_steps` updates (the
      'fastai' preset may omit it: it then evaluates `train_data`, at the start and the end).
    preset: 'smith' | 'fastai', see above.
    min_lr, max_lr, num_steps, mode: the sweep (`schedules.lr_range`); None: the preset's
      ('smith' needs the first three).
    repeats: sweeps from the same start with different data orders (keys folded from `key`);
      the median reading is the suggestion and `.spread` their spread (`result.combine`).
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
  if preset not in PRESETS:
    raise ValueError(f'preset must be one of {tuple(PRESETS)}, got {preset!r}')
  p = PRESETS[preset]
  min_lr = p.get('min_lr') if min_lr is None else min_lr
  max_lr = p.get('max_lr') if max_lr is None else max_lr
  num_steps = p.get('num_steps') if num_steps is None else num_steps
  mode = mode or p['mode']
  if None in (min_lr, max_lr, num_steps):
    raise ValueError(f"preset {preset!r} needs min_lr, max_lr and num_steps (the sweep's range "
                     'and length)')
  if eval_data is None:
    if p['reading'] != 'loss':
      raise ValueError(f'preset {preset!r} reads the held-out accuracy: pass eval_data')
    eval_data = train_data
    eval_every_steps = eval_every_steps or num_steps
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
  # Each sweep gets a jitted copy: owned by XLA, so donating it can never write into host memory
  # that the CPU backend may have aliased from the caller's numpy arrays.
  private = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=NamedSharding(mesh, P()))
  state = sharding.replicate(host_state, mesh)
  data = sharding.replicate({'images': images, 'labels': np.asarray(labels, np.int32),
                          'mean': np.asarray(mean, np.float32)}, mesh)
  spec = step_lib.StepSpec(batch_size=batch_size, mirror=mirror, crop_padding=crop_padding,
                           scale=scale, dtype=jnp.float32)
  evaluator = inputs_lib.Evaluator(adapter, mesh, spec, np.asarray(eval_images),
                              np.asarray(eval_labels, np.int32), np.asarray(mean, np.float32),
                              eval_batch_size)
  settings = _settings(min_lr=min_lr, max_lr=max_lr, num_steps=num_steps, mode=mode,
                       eval_every=eval_every, smoothing=smoothing, diverge_factor=diverge_factor,
                       batch_size=batch_size, model=adapter.name, preset=preset,
                       repeats=int(repeats))
  use_packed = step_lib.packs_by_default()
  train_fn = step_lib.make_train_fn(adapter, tx, mesh, spec, 1, packed=use_packed)
  pop_loss = step_lib.make_pop_loss(mesh)
  results = []
  for i in range(int(repeats)):
    # A fresh private copy per sweep (each one consumes its state), another data order each.
    run_state = private(state)
    if i:
      run_state = run_state.replace(key=jax.random.fold_in(run_state.key, i))
    result = _sweep(step_lib.hold(run_state, use_packed), train_fn, pop_loss,
                    itertools.repeat(data), evaluator, lr_fn,
                    num_steps=int(num_steps), eval_every=eval_every, smoothing=smoothing,
                    diverge_factor=diverge_factor, settings={**settings, 'repeat': i},
                    suggest_kw={**_suggest_kw(min_lr_div_clr, min_lr_div_1cycle),
                                **suggest_kw}, progress=progress, reading=p['reading'])
    results.append(result)
  result = combine(results)
  result.settings = settings
  return result
