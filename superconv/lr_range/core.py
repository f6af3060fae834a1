r"""The one sweep of an LR range test, for any JAX training: `find(loss_fn, params, optimizer,
batches, ...)`.

Its inputs are what a training loop already has:

  loss_fn(params, model_state, batch, key) -> (loss, (new_model_state, metrics))
  optimizer: a factory `lr -> optax.GradientTransformation`, or a transformation built with
    `optax.inject_hyperparams(...)(learning_rate=<number>, ...)`
  batches: an iterable of batch pytrees, or `seed -> iterable` (each repeat its own order)
  eval_fn(params, model_state, batch) -> {name: scalar} over `eval_batches` (optional)

Update s (s = 0 .. n-1) uses lr_s = `schedules.lr_range(min_lr, max_lr, n, mode)(s)`, and with
`momentum=(m0, m1)` the optimizer's 'momentum' (or Adam's 'b1') falls linearly from m0 to m1 as
the LR rises (the first half of a cyclical-momentum cycle, Smith 2018 §5). Its loss is that of
batch s before the update. The held-out metric is evaluated at s = 0 (the untrained model) and
every `eval_every_steps` updates, paired with schedule(s).

Reading (`reading`): 'eval' (default when an evaluation is given) applies the paper's rule
(`reading.suggest`: centered median, fall below the running maximum, `min_rise`) to the metric
`metric`; a metric read downwards (`maximize=False`: a loss) is first mapped to its relative
progress from the untrained model's value v_0,

  progress_k = max(0, 1 - v_k / v_0)        (non-finite: 0),

so "rises by more than min_rise" means "falls by more than min_rise of its start", and a loss
above its start reads like an accuracy at chance. 'loss' (default without an evaluation) reads
the training loss's valley (fastai's, `reading.suggest_from_loss`).

The sweep jits one update, `(params, model_state, opt_state) -> new` with the loss as output,
on private copies of the caller's arrays that keep their shardings (a mesh of several devices
included); only those copies are donated, so the caller's arrays are untouched. Batches are
passed as they come (numpy, or `jax.Array`s already sharded); each new batch shape compiles the
update once more. It stops when the smoothed training loss is not finite or exceeds
`diverge_factor` x its best.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from superconv import schedules
from superconv.lr_range.reading import _LossWatch, suggest, suggest_from_loss, suggest_from_valley
from superconv.lr_range.engine import _as_key, _check_lr, _driven, _injected, _linear
from superconv.lr_range.engine import _mesh_sharding, _num_examples, _param_count, _place
from superconv.lr_range.engine import _reiterable, _shapes
from superconv.lr_range.result import RangeTestResult, combine

READINGS = ('eval', 'loss')
# A forward pass costs about a third of a training update (forward + backward ~ 3 forwards).
EVAL_COST = 1 / 3


def sweep_cost(results, *, batch_size: int, eval_examples: int, run_steps: int,
               run_eval_every: int, run_eval_examples: int) -> dict:
  r"""The sweeps' compute as a fraction of the training run they configure.

  In training-example equivalents (an evaluated example counts `EVAL_COST` = 1/3 of a trained
  one):

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
          'counted': 'training-example equivalents; an evaluated example = 1/3 of a trained one'}


def _default_maximize(metric: str) -> bool:
  return 'acc' in metric.lower()


def _progress(values: np.ndarray, maximize: bool) -> np.ndarray:
  """The curve `reading.suggest` reads: the metric itself (read upwards), or a metric read
  downwards as its relative progress max(0, 1 - v / v_0) from the untrained model's v_0."""
  v = np.asarray(values, np.float64)
  if maximize:
    return v
  v0 = v[0] if len(v) and np.isfinite(v[0]) and v[0] != 0 else 1.0
  out = 1.0 - v / abs(v0)
  return np.where(np.isfinite(out), np.maximum(out, 0.0), 0.0)


def find(loss_fn: Callable, params: Any, optimizer: Any, batches: Any, *,
         model_state: Any = None, eval_fn: Callable | None = None, eval_batches: Any = None,
         metric: str = 'loss', maximize: bool | None = None, min_lr: float = 1e-7,
         max_lr: float = 10.0, num_steps: int = 100, mode: str | None = None,
         momentum: tuple[float, float] | None = None, momentum_name: str | None = None,
         repeats: int = 1, eval_every_steps: int | None = None, key: Any = None,
         opt_state: Any = None, reading: str | None = None, smoothing: float = 0.98,
         diverge_factor: float = 4.0, min_lr_div_clr: float = 4.0,
         min_lr_div_1cycle: float = 10.0, window: int = 5, atol: float = 0.02,
         rtol: float = 0.2, rule: str = 'peak', flat_rule: str = 'largest',
         min_rise: float = 0.1, run_steps: int | None = None, run_eval_every: int = 0,
         run_eval_examples: int | None = None, identity: dict | None = None,
         evaluate: Callable | None = None, progress: bool = False) -> RangeTestResult:
  r"""LR range test of any training: see the module docstring for the sweep and its reading.

  Example (a linear regression; batches are dicts, any pytree works):

    >>> import numpy as np, optax
    >>> from superconv import lr_range
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 3)).astype(np.float32)
    >>> data = [{'x': x[i:i + 16], 'y': x[i:i + 16] @ np.ones(3, np.float32)}
    ...         for i in range(0, 64, 16)] * 10
    >>> def loss_fn(params, state, batch, key):
    ...   loss = ((batch['x'] @ params['w'] - batch['y']) ** 2).mean()
    ...   return loss, (state, {})
    >>> def eval_fn(params, state, batch):
    ...   return {'loss': ((batch['x'] @ params['w'] - batch['y']) ** 2).mean()}
    >>> r = lr_range.find(loss_fn, {'w': np.zeros(3, np.float32)}, optax.sgd, data,
    ...                   eval_fn=eval_fn, eval_batches=data[:4], min_lr=1e-3, max_lr=10.0,
    ...                   num_steps=40, eval_every_steps=2)
    >>> r.suggestion['reliable'], 0.05 < r.max_lr < 1.5, r.diverged_at is not None
    (True, True, True)

  Args:
    loss_fn: `(params, model_state, batch, key) -> (loss, (new_model_state, metrics))`; `key`
      is a fresh PRNG key per update (dropout, augmentation), a function of (key, repeat, s).
    params: any pytree of arrays (numpy or `jax.Array`, sharded over a mesh or not).
    optimizer: a factory `learning_rate -> optax.GradientTransformation` (e.g. `optax.adamw`,
      `lambda lr: optax.sgd(lr, momentum=0.9)`), or `optax.inject_hyperparams(opt)(
      learning_rate=<number>, ...)`, whose learning_rate the sweep sets at every update.
    batches: an iterable of batch pytrees (a list, a generator, a grain DataLoader, ...), or
      `seed -> iterable`, called with 0, 1, ... for each repeat (needed for repeats > 1 unless
      `batches` can be iterated again, e.g. a list). The sweep takes `num_steps` of them.
    model_state: mutable state threaded through `loss_fn` (BatchNorm statistics); default {}.
    eval_fn: `(params, model_state, batch) -> {name: scalar}`, averaged over `eval_batches`
      (weighted by each batch's leading dimension); jitted.
    eval_batches: a sequence of batch pytrees (or `() -> iterable`), read at every evaluation.
    metric: the metric of `eval_fn` to read; maximize: its direction (None: up for names with
      'acc', down otherwise).
    min_lr, max_lr, num_steps, mode: the sweep (`schedules.lr_range`); mode None: 'exp' for
      min_lr > 0, else 'linear'.
    momentum: (m_start, m_end): the optimizer's momentum (or `b1`) swept linearly alongside the
      LR; needs a factory taking it as a keyword (`optax.sgd`, `optax.adamw`) or an injected
      hyperparameter of that name. None: the optimizer's own.
    momentum_name: its hyperparameter's name; None: 'momentum', or 'b1' if the optimizer has it.
    repeats: sweeps from the same start with different data orders and keys; the median reading
      is the suggestion, `.spread` their spread (`result.combine`).
    eval_every_steps: default num_steps // 20 (at least 1).
    key: the run's key (default PRNGKey(0)); not consumed.
    opt_state: the optimizer state to start from (of `optimizer`, or of `factory(lr)`).
    reading: 'eval' | 'loss' | None (see the module docstring).
    smoothing, diverge_factor: the training-loss EMA and the early stop (0: non-finite only).
    min_lr_div_clr, min_lr_div_1cycle, window, atol, rtol, rule, flat_rule, min_rise: the
      reading (`reading.suggest`).
    run_steps, run_eval_every, run_eval_examples: the run the suggestion is for, to report the
      sweep's cost as a fraction of it (`sweep_cost`; examples default: the eval set's).
    identity: what the result records about the training (merged over what the sweep sees:
      parameter count, batch size and shapes, optimizer), e.g. {'model': 'MyNet',
      'num_classes': 10}: a fed run is checked against it (`configure.apply_suggestion`).
    evaluate: instead of eval_fn/eval_batches, `(params, model_state) -> {name: float}` that
      runs its own evaluation loop.
    progress: show a tqdm bar.

  Returns:
    A `RangeTestResult` (its `max_lr` raises for an unreliable reading; `.schedules(...)` gives
    the run's optax schedules).
  """
  if mode is None:
    mode = 'exp' if min_lr > 0 else 'linear'
  num_steps, repeats = int(num_steps), int(repeats)
  if num_steps < 1 or repeats < 1:
    raise ValueError(f'num_steps and repeats must be >= 1, got {num_steps}, {repeats}')
  lr_fn = schedules.lr_range(min_lr, max_lr, num_steps, mode=mode)
  if eval_fn is not None and evaluate is not None:
    raise ValueError('pass eval_fn (with eval_batches) or evaluate, not both')
  if eval_fn is not None and eval_batches is None:
    raise ValueError('eval_fn needs eval_batches (the held-out data it reads)')
  has_eval = eval_fn is not None or evaluate is not None
  reading = reading or ('eval' if has_eval else 'loss')
  if reading not in READINGS:
    raise ValueError(f'reading must be one of {READINGS}, got {reading!r}')
  if reading == 'eval' and not has_eval:
    raise ValueError("reading='eval' needs eval_fn and eval_batches (or evaluate)")
  maximize = _default_maximize(metric) if maximize is None else bool(maximize)
  eval_every = int(eval_every_steps or max(1, num_steps // 20))
  if eval_every < 1:
    raise ValueError(f'eval_every_steps must be >= 1, got {eval_every_steps}')
  suggest_kw = dict(window=int(window), atol=float(atol), rtol=float(rtol), rule=rule,
                    flat_rule=flat_rule, min_lr_div_clr=float(min_lr_div_clr),
                    min_lr_div_1cycle=float(min_lr_div_1cycle), min_rise=float(min_rise))
  _LossWatch(smoothing, diverge_factor)  # checks both before anything is compiled
  suggest([0.0], [0.0], **suggest_kw)   # checks rule and flat_rule likewise
  key = _as_key(key)
  model_state = {} if model_state is None else model_state

  # The optimizer: an inject_hyperparams transformation whose LR (and momentum) the sweep sets.
  if isinstance(optimizer, optax.GradientTransformation):
    base, factory = optimizer, None
  elif callable(optimizer):
    factory = optimizer
    names = set()
    try:
      names = set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
      pass
    # inject_hyperparams reads the hyperparameters' names off the signature: spelled out.
    def make(learning_rate):
      return factory(learning_rate)

    def make_momentum(learning_rate, momentum):
      return factory(learning_rate, momentum=momentum)

    def make_b1(learning_rate, b1):
      return factory(learning_rate, b1=b1)

    if momentum is None:
      base = optax.inject_hyperparams(make)(learning_rate=float(min_lr))
    else:
      momentum_name = momentum_name or ('b1' if 'b1' in names else 'momentum')
      if momentum_name not in ('momentum', 'b1') or (names and momentum_name not in names):
        raise ValueError(f'momentum=(m0, m1) needs an optimizer factory taking momentum= or b1= '
                         f'(e.g. optax.sgd, optax.adamw); {momentum_name!r} of '
                         f'{getattr(factory, "__name__", factory)!r} is not swept')
      make_m = make_momentum if momentum_name == 'momentum' else make_b1
      base = optax.inject_hyperparams(make_m)(
          learning_rate=float(min_lr), **{momentum_name: float(momentum[0])})
  else:
    raise TypeError(f'optimizer must be an optax.GradientTransformation or a factory '
                    f'lr -> GradientTransformation, got {type(optimizer).__name__}')
  replicated = _mesh_sharding((params, model_state))
  p0 = _place(params, replicated)
  ms0 = _place(model_state, replicated)
  start = base.init(p0)
  hp = _injected(start)
  if hp is None:
    raise ValueError('the optimizer state has no top-level injected learning_rate: pass a '
                     'factory lr -> optimizer, or build the optimizer with '
                     'optax.inject_hyperparams(opt)(learning_rate=0.0, ...)')
  momentum_fn = None
  if momentum is not None:
    momentum_name = momentum_name or ('b1' if 'b1' in hp else 'momentum')
    if momentum_name not in hp:
      raise ValueError(f'momentum=(m0, m1): the optimizer has no injected {momentum_name!r} '
                       f'(it injects {sorted(hp)})')
    m0, m1 = (float(m) for m in momentum)
    momentum_fn = _linear(m0, m1, num_steps)
  if opt_state is not None:
    start = (start._replace(inner_state=opt_state) if factory is not None else opt_state)
  tx = _driven(base, lr_fn, momentum_fn, momentum_name)
  o0 = _place((jnp.zeros((), jnp.int32), start), replicated)

  def update(params, model_state, opt_state, batch, key):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (model_state, _)), grads = grad_fn(params, model_state, batch, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), model_state, opt_state, loss

  shardings = jax.tree.map(lambda x: x.sharding, (p0, ms0, o0))
  loss_sharding = replicated or jax.tree.leaves(p0)[0].sharding
  step_fn = jax.jit(update, donate_argnums=(0, 1, 2),
                    out_shardings=(*shardings, loss_sharding))

  if evaluate is None and eval_fn is not None:
    eval_jit = jax.jit(eval_fn)
    get_eval = _reiterable(eval_batches, 'eval_batches') if not (
        callable(eval_batches) and not hasattr(eval_batches, '__iter__')) else (
            lambda seed: eval_batches())

    def evaluate(params, model_state):
      total, weight = None, 0
      for b in get_eval(0):
        m = eval_jit(params, model_state, b)
        n = _num_examples(b)
        m = jax.tree.map(lambda v: v * n, m)
        total = m if total is None else jax.tree.map(jnp.add, total, m)
        weight += n
      if total is None:
        raise ValueError('eval_batches is empty')
      return {k: float(v) / weight for k, v in jax.device_get(total).items()}
    eval_examples = sum(_num_examples(b) for b in get_eval(0))
  else:
    eval_examples = 0
  feed = batches if callable(batches) and not hasattr(batches, '__iter__') else (
      _reiterable(batches, 'batches') if repeats > 1 else (lambda seed: batches))

  lrs = np.asarray(jax.device_get(jax.vmap(lr_fn)(jnp.arange(num_steps + 1))), np.float64)
  seen = {}
  results = []
  for i in range(repeats):
    run_key = key if i == 0 else jax.random.fold_in(key, i)
    state = (p0, ms0, o0) if repeats == 1 else _place((p0, ms0, o0), replicated)
    results.append(_sweep(step_fn, state, iter(feed(i)), run_key, evaluate, lrs,
                          num_steps=num_steps, eval_every=eval_every, smoothing=smoothing,
                          diverge_factor=diverge_factor, reading=reading, metric=metric,
                          maximize=maximize, suggest_kw=suggest_kw, progress=progress,
                          seen=seen))
  result = combine(results)
  b = seen.get('batch')
  opt_desc = {'factory': getattr(factory, '__qualname__', repr(factory))} if factory else {}
  opt_desc.update({k: float(np.asarray(v)) for k, v in hp.items()
                   if k != 'learning_rate' and np.size(v) == 1})
  ident = {'model': getattr(loss_fn, '__qualname__', 'loss_fn'),
           'params': _param_count(params), 'batch_size': _num_examples(b) if b else None,
           'input_shape': _shapes(b) if b is not None else None, 'num_classes': None,
           'optimizer': opt_desc,
           'momentum': list(momentum) if momentum is not None else opt_desc.get(
               momentum_name or 'momentum', opt_desc.get('b1')),
           **(identity or {})}
  result.settings = {'min_lr': float(min_lr), 'max_lr': float(max_lr),
                     'num_steps': num_steps, 'mode': mode, 'eval_every_steps': eval_every,
                     'smoothing': float(smoothing), 'diverge_factor': float(diverge_factor),
                     'batch_size': ident['batch_size'], 'model': ident['model'],
                     'reading': reading, 'metric': metric if reading == 'eval' else 'train_loss',
                     'maximize': maximize, 'repeats': repeats,
                     'momentum_swept': list(momentum) if momentum is not None else None,
                     'identity': ident}
  for i, r in enumerate(results):
    r.settings = {**result.settings, 'repeat': i}
  if run_steps:
    result.cost = sweep_cost(results, batch_size=ident['batch_size'] or 1,
                             eval_examples=eval_examples, run_steps=int(run_steps),
                             run_eval_every=int(run_eval_every),
                             run_eval_examples=int(eval_examples if run_eval_examples is None
                                                   else run_eval_examples))
  return result


def _sweep(step_fn, state, batches, key, evaluate, lrs, *, num_steps, eval_every, smoothing,
           diverge_factor, reading, metric, maximize, suggest_kw, progress,
           seen) -> RangeTestResult:
  """One sweep from `state` (params, model_state, opt_state; consumed) and its reading."""
  t0 = time.perf_counter()
  bar = None
  if progress:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=num_steps, unit='step', dynamic_ncols=True, desc='lr range')
  watch = _LossWatch(smoothing, diverge_factor)
  losses, smoothed, pending, evals = [], [], [], []
  params, model_state, opt_state = state

  def do_eval(step, params, model_state):
    if evaluate is not None:
      evals.append((step, lrs[step], evaluate(params, model_state)))

  do_eval(0, params, model_state)
  # XLA:CPU runs every device's share of a program on one shared thread pool: with many
  # programs in flight, an all-reduce can wait on a device thread busy with a later one until
  # its rendezvous aborts the process (seen: 4 CPU devices on 2 cores, 100 updates queued).
  # Waiting on every 16th loss bounds what is in flight; accelerators are not throttled.
  throttle = 16 if jax.default_backend() == 'cpu' and jax.local_device_count() > 1 else 0
  step = 0
  while step < num_steps:
    try:
      batch = next(batches)
    except StopIteration:
      raise ValueError(f'batches ran out after {step} of the {num_steps} updates') from None
    seen.setdefault('batch', batch)
    params, model_state, opt_state, loss = step_fn(params, model_state, opt_state, batch,
                                                   jax.random.fold_in(key, step))
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
    if len(losses) == step and step <= eval_every:
      _check_lr(opt_state, lrs[step - 1], step - 1)
    do_eval(step, params, model_state)
    if bar is not None:
      bar.update(step - bar.n)
      bar.set_postfix(lr=f'{lrs[step - 1]:.3g}', loss=f'{smoothed[-1]:.3f}', refresh=False)
    if watch.diverged_at is not None:
      break
  if bar is not None:
    bar.close()
  jax.block_until_ready(params)

  n = len(losses)
  ev_steps = np.asarray([e[0] for e in evals], np.int64)
  ev_lrs = np.asarray([e[1] for e in evals], np.float64)
  names = sorted({k for e in evals for k in e[2]})
  metrics = {k: np.asarray([e[2].get(k, np.nan) for e in evals], np.float64) for k in names}
  col = lambda *ks: next((metrics[k] for k in ks if k in metrics),
                         np.full(len(evals), np.nan))
  stop_lr = None if watch.diverged_at is None else float(lrs[watch.diverged_at])
  lsug = suggest_from_loss(lrs[:n], smoothed, stop=watch.diverged_at)
  if reading == 'loss':
    sug = suggest_from_valley(lsug, suggest_kw['min_lr_div_clr'],
                              suggest_kw['min_lr_div_1cycle'])
  else:
    if metric not in metrics:
      raise ValueError(f'metric {metric!r} is not among the evaluation metrics {names}')
    sug = suggest(ev_lrs, _progress(metrics[metric], maximize), stop_lr=stop_lr, **suggest_kw)
    if not maximize:  # the curve read was the metric's relative progress: say so
      sug['peak_accuracy'] = None
      sug['explanation'] = sug['explanation'].replace(
          'accuracy never fell', f'the held-out {metric} never rose').replace(
              'smoothed accuracy', f'smoothed progress of the held-out {metric} (1 - v / v_0)')
  return RangeTestResult(
      lrs=lrs[:n], train_loss=np.asarray(losses), train_loss_smoothed=np.asarray(smoothed),
      eval_steps=ev_steps, eval_lrs=ev_lrs, eval_accuracy=col('accuracy', 'eval_accuracy'),
      eval_loss=col('loss', 'eval_loss'), suggestion=sug, loss_suggestion=lsug,
      diverged_at=watch.diverged_at, diverge_reason=watch.reason,
      wall_seconds=time.perf_counter() - t0, eval_metrics=metrics)
