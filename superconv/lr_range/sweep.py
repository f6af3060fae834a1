"""The image-classifier doors of the range test: `run(config, workdir)` (the CLI's
`mode=lr_range`) and `range_test(model, ...)`: thin clients of the one sweep, `core.find`.

Both express superconv's training as `find`'s inputs: `image_loss_fn` (softmax cross-entropy
of a Linen / NNX / plain-function model on batches drawn and augmented on the device from the
set held there, or on streamed batches; data-parallel over the mesh with per-device BatchNorm
as in training), batches `{'data', 'key', 'step'}` (the draw is a function of the run key and
the update, as in `step`), and the evaluator of the training run as `evaluate`.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import types
from typing import Any, Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from superconv import inputs as inputs_lib
from superconv import metrics as metrics_lib
from superconv import model_adapter
from superconv import setup as setup_lib
from superconv import sharding
from superconv import step as step_lib
from superconv import storage
from superconv.data import pipeline
from superconv.data import sources
from superconv.lr_range import core
from superconv.lr_range.core import sweep_cost  # noqa: F401  (its home is core)
from superconv.lr_range.result import RangeTestResult
from superconv.sharding import AXIS


def image_loss_fn(model, mesh, spec: step_lib.StepSpec) -> Callable:
  """`find`'s loss_fn for an image classifier trained as superconv trains it.

  batch = {'data': {'images', 'labels', 'mean'} (the set, replicated; or, if `spec.streamed`,
  this update's batch [1, B, ...] sharded over 'data'), 'key': the run key, 'step': update}.
  The global batch and its augmentation are drawn from (key, step) exactly as `step` draws
  them; each device takes its slice, normalises with its own BatchNorm statistics, and the
  loss and running statistics are averaged over the devices (as the training step does).
  """
  adapter = model_adapter.adapt(model)
  n = mesh.devices.size
  if spec.batch_size % n:
    raise ValueError(f'batch_size={spec.batch_size} is not divisible by the {n} devices '
                     'of the mesh; choose a multiple of the device count.')

  def local(params, batch_stats, data, key, step):
    order_key, aug_key, drop_key = jax.random.split(key, 3)
    if spec.streamed:
      images = pipeline.preprocess_eval(data['images'][0], mean=data['mean'], scale=spec.scale,
                                        dtype=spec.dtype)
      labels = data['labels'][0]
    else:
      idx = pipeline.batch_indices(order_key, step, spec.batch_size, data['labels'].shape[0])
      aug = pipeline.draw_augmentation(jax.random.fold_in(aug_key, step), spec.batch_size,
                                       mirror=spec.mirror, crop_padding=spec.crop_padding)
      size = spec.batch_size // n
      take = lambda a: lax.dynamic_slice_in_dim(a, lax.axis_index(AXIS) * size, size)
      idx, aug = take(idx), jax.tree.map(take, aug)
      images = pipeline.apply_augmentation(
          data['images'][idx], aug, mean=data['mean'], scale=spec.scale,
          crop_padding=spec.crop_padding, dtype=spec.dtype)
      labels = data['labels'][idx]
    dropout_key = jax.random.fold_in(jax.random.fold_in(drop_key, step), lax.axis_index(AXIS))
    logits, batch_stats = adapter.apply(params, batch_stats, images, train=True,
                                        dropout_key=dropout_key)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                           labels).mean()
    return lax.pmean(loss, AXIS), lax.pmean(batch_stats, AXIS)

  data_spec = P()
  if spec.streamed:
    data_spec = {'images': P(None, AXIS), 'labels': P(None, AXIS), 'mean': P()}
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), data_spec, P(), P()),
                          out_specs=(P(), P()))

  def loss_fn(params, batch_stats, batch, key):
    del key  # the draw is a function of (batch['key'], batch['step']), as in training
    loss, batch_stats = sharded(params, batch_stats, batch['data'], batch['key'], batch['step'])
    return loss, (batch_stats, {})
  return loss_fn


def _image_batches(data_fn: Callable[[], Any], run_key) -> Callable[[int], Any]:
  """`seed -> iterator` of `image_loss_fn` batches: repeat i draws with the run key folded
  with i (repeat 0: the run key itself)."""

  def batches(seed):
    key = run_key if seed == 0 else jax.random.fold_in(run_key, seed)
    step = 0
    while True:
      yield {'data': data_fn(), 'key': key, 'step': np.int32(step)}
      step += 1
  return batches


def _evaluate(evaluator) -> Callable:
  def evaluate(params, batch_stats):
    r = evaluator(types.SimpleNamespace(params=params, batch_stats=batch_stats))
    return {'accuracy': r['eval_accuracy'], 'loss': r['eval_loss']}
  return evaluate


def _param_count(params) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def run(config: ml_collections.ConfigDict, workdir: str) -> RangeTestResult:
  """The LR range test of a resolved config (`configure.resolve`, mode 'lr_range').

  The training run's pieces on the same ('data',) mesh: its data (`inputs.open_inputs`, in
  memory or streamed), model, optimizer (its 'lr_range' schedule is the sweep's) and initial
  state, swept by `core.find` through `image_loss_fn`. Evaluates on the split
  `lr_range.eval_split` names ('validation': `lr_range.eval_examples` training examples held
  out, the same for every seed; 'test': the paper's reading). With `lr_range.repeats` = k > 1,
  k sweeps from the same initial weights with different data orders; the median reading is the
  suggestion (`result.combine`), read as `lr_range.reading` says ('accuracy' or 'loss'). Writes
  the workdir's files (config.json, metrics.jsonl, summary.json, lr_range.json and .png) and
  prints the one-line summary. No checkpoints: a sweep is short, rerun it.
  """
  storage.makedirs(workdir)  # a local folder or an object store (gs://...)
  metrics_lib.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  r = config.lr_range
  # The training run's pieces (no checkpointer: a sweep is short); the optimizer's LR schedule
  # is the sweep's, which `find` checks.
  setup = setup_lib.build(config, None, eval_split=r.eval_split,
                          eval_examples=int(r.eval_examples), eval_seed=int(r.eval_seed))
  mesh, inputs, model, tx, spec = setup.mesh, setup.inputs, setup.model, setup.tx, setup.spec
  feed, evaluator = inputs.feed(mesh), inputs.evaluator(model, mesh, spec)
  logging.info('LR range test: %s, LR %g -> %g (%s) over %d updates, batch %d, %d devices, '
               '%d repeat(s), read on the %s split.', config.model.name, r.min_lr, r.max_lr,
               r.mode, r.num_steps, config.batch_size, mesh.devices.size, r.repeats,
               r.eval_split)
  state = setup.init()
  m = config.momentum_schedule
  swept = ([float(m.max_momentum), float(m.min_momentum)] if m.name == 'cyclical' else None)
  start_m = float(m.value if m.name == 'constant' else m.max_momentum)
  identity = {'model': model.name, 'params': _param_count(state.params),
              'input_shape': list(inputs.image_shape), 'num_classes': int(inputs.num_classes),
              'batch_size': int(config.batch_size),
              'optimizer': {'name': config.optimizer.name,
                            'weight_decay': float(config.optimizer.weight_decay)},
              'momentum': start_m}
  with contextlib.closing(feed):
    result = core.find(
        image_loss_fn(model, mesh, spec), state.params, tx,
        _image_batches(lambda: next(feed), state.key), model_state=state.batch_stats,
        evaluate=_evaluate(evaluator), metric='accuracy', maximize=True,
        reading='eval' if r.reading == 'accuracy' else 'loss', min_lr=r.min_lr,
        max_lr=r.max_lr, num_steps=int(r.num_steps), mode=r.mode,
        repeats=int(r.repeats), eval_every_steps=int(r.eval_every_steps),
        smoothing=float(r.smoothing), diverge_factor=float(r.diverge_factor),
        min_lr_div_clr=r.min_lr_div_clr, min_lr_div_1cycle=r.min_lr_div_1cycle,
        min_rise=float(r.min_rise), identity=identity,
        progress=jax.process_index() == 0 and config.progress_bar)
  del state
  extra = dict(model=config.model.name, dataset=config.data.name,
               optimizer=config.optimizer.name, momentum=config.momentum_schedule.to_dict(),
               weight_decay=float(config.optimizer.weight_decay), seed=int(config.seed),
               eval_split=r.eval_split, eval_examples=int(evaluator.num_examples),
               momentum_swept=swept, config=config.to_dict())
  for x in [result, *result.runs]:
    x.settings = {**x.settings, **extra}
  if r.run_steps:  # the run it configures is known (a training config swept)
    dspec = sources.SPECS[config.data.name]
    test_size = config.data.fake_num_test if config.data.source == 'fake' else dspec.test_size
    result.cost = sweep_cost(result.runs or [result], batch_size=config.batch_size,
                             eval_examples=evaluator.num_examples, run_steps=int(r.run_steps),
                             run_eval_every=int(config.eval_every_steps),
                             run_eval_examples=int(test_size))
  result.save_run_files(workdir)
  result.save(workdir)
  if jax.process_index() == 0:
    print(result.summary(), flush=True)
  return result


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


# The reading options `range_test` passes on to `find` (`reading.suggest`).
SUGGEST_OPTIONS = ('window', 'atol', 'rtol', 'rule', 'flat_rule', 'min_rise')


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
  unknown = sorted(set(suggest_kw) - set(SUGGEST_OPTIONS))
  if unknown:  # before anything is copied or compiled
    raise TypeError(f'range_test() got unexpected keyword arguments {unknown}; it takes '
                    f'{sorted(RANGE_TEST_KEYWORDS)} and the reading options {SUGGEST_OPTIONS}')
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
  if variables is None:
    if isinstance(adapter, model_adapter.LinenAdapter):
      raise ValueError('a Linen module needs its variables: pass {"params": ..., '
                       '"batch_stats": ...} (e.g. from model.init)')
    variables = dict(zip(('params', 'batch_stats'), adapter.init(None, None)))
  # Host copies, then replicated over the mesh: `find` sweeps private device copies of these.
  params = sharding.replicate(jax.tree.map(np.asarray, variables['params']), mesh)
  batch_stats = sharding.replicate(jax.tree.map(np.asarray, variables.get('batch_stats', {})),
                                   mesh)
  if key is None:
    key = jax.random.PRNGKey(0)
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  images, labels = train_data
  eval_images, eval_labels = eval_data
  images = np.asarray(images)
  if mean is None:
    mean = np.zeros(images.shape[1:], np.float32)
  data = sharding.replicate({'images': images, 'labels': np.asarray(labels, np.int32),
                             'mean': np.asarray(mean, np.float32)}, mesh)
  spec = step_lib.StepSpec(batch_size=batch_size, mirror=mirror, crop_padding=crop_padding,
                           scale=scale, dtype=jnp.float32)
  evaluator = inputs_lib.Evaluator(adapter, mesh, spec, np.asarray(eval_images),
                                   np.asarray(eval_labels, np.int32),
                                   np.asarray(mean, np.float32), eval_batch_size)
  logits = jax.eval_shape(lambda p, s, x: adapter.apply(p, s, x, train=False)[0], params,
                          batch_stats, jax.ShapeDtypeStruct((1, *images.shape[1:]), jnp.float32))
  identity = {'model': adapter.name, 'params': _param_count(params),
              'input_shape': list(images.shape[1:]), 'num_classes': int(logits.shape[-1]),
              'batch_size': int(batch_size)}
  result = core.find(
      image_loss_fn(adapter, mesh, spec), params, optimizer,
      _image_batches(lambda: data, np.array(key, copy=True)), model_state=batch_stats,
      evaluate=_evaluate(evaluator), metric='accuracy', maximize=True,
      reading='eval' if p['reading'] == 'accuracy' else 'loss', min_lr=min_lr, max_lr=max_lr,
      num_steps=int(num_steps), mode=mode, repeats=int(repeats),
      eval_every_steps=int(eval_every_steps or max(1, num_steps // 20)), opt_state=opt_state,
      smoothing=smoothing, diverge_factor=diverge_factor, min_lr_div_clr=min_lr_div_clr,
      min_lr_div_1cycle=min_lr_div_1cycle, identity=identity, progress=progress,
      **suggest_kw)
  for x in [result, *result.runs]:
    x.settings = {**x.settings, 'preset': preset}
  return result


RANGE_TEST_KEYWORDS = tuple(
    k for k, v in inspect.signature(range_test).parameters.items() if v.kind == v.KEYWORD_ONLY)
