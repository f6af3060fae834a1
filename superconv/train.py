"""Training: the state, the jitted SPMD train step, evaluation, and `train_and_evaluate`.

One program runs on every device of every host. The mesh has a single axis, 'data'. The train step
is `jax.jit(jax.shard_map(...))`: each device takes its slice of the global batch (drawn from a
dataset held in device memory, or, for ImageNet, streamed from its host), runs the model
(BatchNorm statistics are per device, as on the paper's 8 GPUs), and the gradients are averaged
with `pmean`. Several updates run per dispatch under `lax.scan`, so Python is out of the hot loop;
metric sums stay on the device until a log point.

Everything random is a function of (seed, step): which examples form the batch, the flips and
crops, dropout. A checkpoint therefore only needs the state, and a resumed run repeats exactly
what the uninterrupted run would have done, in memory or streamed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import time
from typing import Any, Callable

from absl import logging
from flax import struct
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from superconv import checkpoint as ckpt_lib
from superconv import lr_estimate
from superconv import metrics as metrics_lib
from superconv import models
from superconv import optim
from superconv.data import pipeline
from superconv.data import sources
from superconv.data import streaming

AXIS = 'data'


class TrainingDiverged(RuntimeError):
  """The training loss or gradient became NaN or infinite."""


class TrainState(struct.PyTreeNode):
  step: jax.Array         # int32 scalar: updates done so far
  params: Any
  batch_stats: Any        # BN running statistics ({} for models without BN)
  opt_state: Any
  key: jax.Array          # uint32[2]: the run's root key; per-step keys are folded from it
  sums: dict              # metric sums since the last log row (checkpointed, for exact resume)
  aux: dict = struct.field(default_factory=dict)  # carried extras: the LR estimate's last update


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """Static description of the in-memory input pipeline (hashable: part of the compiled step)."""
  batch_size: int          # global batch
  mirror: bool = True
  crop_padding: int = 0
  scale: float = 1.0
  dtype: Any = jnp.float32  # compute dtype of the images
  lr_estimate_ema: float = 0.0  # > 0: track the paper's LR estimate with this EMA factor
  streamed: bool = False    # batches arrive from the host (ImageNet) instead of an on-device set


def zero_sums() -> dict:
  f32 = jnp.float32
  return dict(loss=jnp.zeros((), f32), correct=jnp.zeros((), f32), count=jnp.zeros((), f32),
              steps=jnp.zeros((), jnp.int32), grad_norm=jnp.zeros((), f32),
              param_norm=jnp.zeros((), f32), nonfinite_step=jnp.full((), -1, jnp.int32),
              nonfinite_lr=jnp.zeros((), f32), nonfinite_momentum=jnp.zeros((), f32))


# ----------------------------------------------------------------------------------------------
# Mesh and placement


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over all devices of all processes."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return jax.sharding.Mesh(devices, (AXIS,))


def replicate(tree: Any, mesh) -> Any:
  """Places host arrays (identical on every process) on every device of the mesh."""
  sharding = NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(put, tree)


def shard_leading(tree: Any, mesh, axis: int = 0) -> Any:
  """Places host arrays split along `axis` over the 'data' devices (eval batches)."""
  def put(x):
    x = np.asarray(x)
    spec = [None] * x.ndim
    spec[axis] = AXIS
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, P(*spec)), lambda idx: x[idx])
  return jax.tree.map(put, tree)


# ----------------------------------------------------------------------------------------------
# State


def create_train_state(model, tx: optax.GradientTransformation, key: jax.Array,
                       image_shape: tuple[int, ...], mesh, *,
                       lr_estimate: bool = False) -> TrainState:
  """Initialises parameters, BN statistics and optimizer state, replicated over the mesh."""

  def init(key):
    init_key, run_key = jax.random.split(key)
    variables = model.init({'params': init_key, 'dropout': init_key},
                           jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables['params']
    aux = {}
    if lr_estimate:  # the previous update and its LR, and the smoothed estimate (m0 = 0.1)
      aux = {'prev_update': jax.tree.map(jnp.zeros_like, params),
             'prev_lr': jnp.zeros((), jnp.float32), 'estimate': jnp.zeros((), jnp.float32),
             'estimate_ema': jnp.full((), 0.1, jnp.float32)}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
                      key=run_key, sums=zero_sums(), aux=aux)

  return jax.jit(init, out_shardings=NamedSharding(mesh, P()))(key)


def abstract_state(state_fn: Callable[[], TrainState]) -> Any:
  """Shapes, dtypes and shardings of a state without computing it (for checkpoint restore)."""
  return jax.eval_shape(state_fn)


# ----------------------------------------------------------------------------------------------
# The step


def hyperparams(opt_state) -> dict:
  """LR and momentum of the last update (NaN for optimizers without injected hyperparameters)."""
  try:
    hp = optim.current_hyperparams(opt_state)
  except ValueError:
    nan = jnp.full((), jnp.nan, jnp.float32)
    return {'learning_rate': nan, 'momentum': nan}
  return {'learning_rate': hp['learning_rate'], 'momentum': hp['momentum']}


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _memory_batch(state: TrainState, data: dict, spec: InputSpec, num_devices: int):
  """This device's images and labels at `state.step`, drawn from the set held on the device."""
  order_key, aug_key, _ = jax.random.split(state.key, 3)
  # The global batch and its augmentation are drawn identically on every device; each device
  # takes its own slice. So 1 device and N devices see exactly the same images.
  idx = pipeline.batch_indices(order_key, state.step, spec.batch_size, data['labels'].shape[0])
  aug = pipeline.draw_augmentation(jax.random.fold_in(aug_key, state.step), spec.batch_size,
                                   mirror=spec.mirror, crop_padding=spec.crop_padding)
  local = spec.batch_size // num_devices
  take = lambda a: lax.dynamic_slice_in_dim(a, lax.axis_index(AXIS) * local, local)
  idx = take(idx)
  aug = jax.tree.map(take, aug)
  images = pipeline.apply_augmentation(
      data['images'][idx], aug, mean=data['mean'], scale=spec.scale,
      crop_padding=spec.crop_padding, dtype=spec.dtype)
  return images, data['labels'][idx]


def _streamed_batch(data: dict, spec: InputSpec):
  """This device's slice of a streamed batch: cropped and flipped on the host, normalised here."""
  images = pipeline.preprocess_eval(data['images'], mean=data['mean'], scale=spec.scale,
                                    dtype=spec.dtype)
  return images, data['labels']


def _local_train_step(state: TrainState, data: dict, *, model, tx, spec: InputSpec,
                      num_devices: int) -> TrainState:
  """One update, as seen by one device inside shard_map.

  `data` is the whole set (in memory, replicated) or, if `spec.streamed`, this device's part of
  the step's batch.
  """
  step = state.step
  if spec.streamed:
    images, labels = _streamed_batch(data, spec)
  else:
    images, labels = _memory_batch(state, data, spec, num_devices)
  drop_key = jax.random.split(state.key, 3)[2]
  device = lax.axis_index(AXIS)
  dropout_key = jax.random.fold_in(jax.random.fold_in(drop_key, step), device)

  def loss_fn(params):
    logits, mutated = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        mutable=['batch_stats'], rngs={'dropout': dropout_key})
    return _cross_entropy(logits, labels).mean(), (logits, mutated.get('batch_stats', {}))

  # Differentiate with respect to a per-device copy of the (replicated) parameters. Left
  # replicated, shard_map's autodiff would already sum the gradient over devices; with an
  # explicit copy each device gets its own gradient and the mean below is the only reduction.
  local_params = lax.pcast(state.params, AXIS, to='varying')
  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(local_params)
  grads = lax.pmean(grads, AXIS)
  # Each device normalised with its own statistics; the running averages are averaged so every
  # replica evaluates with the same model.
  batch_stats = lax.pmean(batch_stats, AXIS)
  loss = lax.pmean(loss, AXIS)
  correct = lax.psum(jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32), AXIS)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  hp = hyperparams(opt_state)
  s = state.sums
  grad_norm = optax.global_norm(grads)
  # The loss alone misses a divergence: with BN the loss can stay finite while a NaN gradient
  # (hence NaN parameters) has already appeared, e.g. max_lr=1e6 on the smoke ResNet.
  first_bad = (s['nonfinite_step'] < 0) & ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
  sums = dict(
      loss=s['loss'] + loss, correct=s['correct'] + correct,
      count=s['count'] + spec.batch_size, steps=s['steps'] + 1,
      grad_norm=grad_norm, param_norm=optax.global_norm(params),
      nonfinite_step=jnp.where(first_bad, step, s['nonfinite_step']),
      nonfinite_lr=jnp.where(first_bad, hp['learning_rate'], s['nonfinite_lr']),
      nonfinite_momentum=jnp.where(first_bad, hp['momentum'], s['nonfinite_momentum']))
  aux = state.aux
  if spec.lr_estimate_ema:
    # The paper's Hessian-free estimate (§4 of 1708.07120) from this update and the previous
    # one; the first update has no predecessor, so the estimate starts at the second.
    lr = hp['learning_rate']
    est = lr_estimate.lr_estimate_metric(aux['prev_update'], updates, aux['prev_lr'], lr)
    est = jnp.where(step > 0, est['lr_estimate'], 0.0)
    ema = jnp.where(step > 0, lr_estimate.ema_update(aux['estimate_ema'], est,
                                                     spec.lr_estimate_ema), aux['estimate_ema'])
    aux = {'prev_update': updates, 'prev_lr': lr.astype(jnp.float32), 'estimate': est,
           'estimate_ema': ema}
  return state.replace(step=step + 1, params=params, batch_stats=batch_stats,
                       opt_state=opt_state, sums=sums, aux=aux)


def make_train_fn(model, tx, mesh, spec: InputSpec, steps_per_call: int):
  """`fn(state, data) -> state` running `steps_per_call` updates; jitted, state donated.

  In memory: `data` = {'images': [N, H, W, C], 'labels': int32[N], 'mean': [H, W, C]},
  replicated, the same every call. Streamed (`spec.streamed`): `data` = {'images': uint8
  [steps_per_call, B, S, S, 3], 'labels': int32 [steps_per_call, B]} sharded over 'data' along
  B, and 'mean' (replicated): the batches of the next `steps_per_call` updates.
  """
  num_devices = mesh.devices.size
  if spec.batch_size % num_devices:
    raise ValueError(f'batch_size={spec.batch_size} is not divisible by the {num_devices} devices '
                     'of the mesh; choose a multiple of the device count.')
  step = functools.partial(_local_train_step, model=model, tx=tx, spec=spec,
                           num_devices=num_devices)

  def multi_step(state, data):
    if spec.streamed:
      batches = {'images': data['images'], 'labels': data['labels']}
      if steps_per_call == 1:
        return step(state, {**jax.tree.map(lambda x: x[0], batches), 'mean': data['mean']})
      body = lambda s, b: (step(s, {**b, 'mean': data['mean']}), None)
      return lax.scan(body, state, batches)[0]
    if steps_per_call == 1:
      return step(state, data)
    state, _ = lax.scan(lambda s, _: (step(s, data), None), state, None, length=steps_per_call)
    return state

  data_spec = P()
  if spec.streamed:
    data_spec = {'images': P(None, AXIS), 'labels': P(None, AXIS), 'mean': P()}
  sharded = jax.shard_map(multi_step, mesh=mesh, in_specs=(P(), data_spec), out_specs=P())
  return jax.jit(sharded, donate_argnums=0)


def make_eval_fn(model, mesh, spec: InputSpec):
  """`fn(params, batch_stats, images, labels, mask, mean) -> {loss, correct, count}` for one batch.

  The batch is sharded over 'data'; padding examples carry mask 0, so the last partial batch of
  a split is counted and nothing else. One compiled program serves every batch of the split.
  """

  def local_eval(params, batch_stats, images, labels, mask, mean):
    x = pipeline.preprocess_eval(images, mean=mean, scale=spec.scale, dtype=spec.dtype)
    logits = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=False)
    mask = mask.astype(jnp.float32)
    loss = jnp.sum(_cross_entropy(logits, labels) * mask)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
    return {'loss': lax.psum(loss, AXIS), 'correct': lax.psum(correct, AXIS),
            'count': lax.psum(mask.sum(), AXIS)}

  sharded = jax.shard_map(local_eval, mesh=mesh, out_specs=P(),
                          in_specs=(P(), P(), P(AXIS), P(AXIS), P(AXIS), P()))
  return jax.jit(sharded)


@jax.jit
def _reset_sums(state: TrainState) -> TrainState:
  return state.replace(sums=zero_sums())


# ----------------------------------------------------------------------------------------------
# The run


def dispatch_size(config: ml_collections.ConfigDict, backend: str | None = None) -> int:
  """Updates per dispatch: the largest divisor of `steps_per_dispatch` that lands on every
  log, eval and checkpoint boundary and on the end, so the step compiles exactly once.

  On the CPU backend it is 1: XLA:CPU runs convolutions inside a while loop (`lax.scan`) far
  slower than at top level (measured here: ResNet-20, batch 128, 0.6 s per update unrolled,
  18.8 s inside a scan), and a CPU step is long enough that Python's dispatch cost is noise.
  """
  if (backend or jax.default_backend()) == 'cpu':
    return 1
  k = max(int(config.steps_per_dispatch), 1)
  for every in (config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps,
                config.num_steps, config.stop_after_steps):
    if every:
      k = math.gcd(k, int(every))
  return k


def input_spec(config: ml_collections.ConfigDict) -> InputSpec:
  return InputSpec(batch_size=config.batch_size, mirror=config.data.mirror,
                   crop_padding=config.data.crop_padding, scale=config.data.scale,
                   dtype=jnp.dtype(config.model.dtype),
                   lr_estimate_ema=float(config.lr_estimate.ema) if config.lr_estimate.enabled
                   else 0.0, streamed=sources.streamed(config.data.name))


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  m = config.model
  return models.create_model(m.name, num_classes=num_classes, dtype=m.dtype,
                             bn_momentum=m.bn_momentum, bn_epsilon=m.bn_epsilon,
                             virtual_batch_size=m.virtual_batch_size, dropout_rate=m.dropout_rate)


class _Evaluator:
  """Evaluation compiled once, over batches (images, labels, mask) sharded along 'data'.

  Subclasses give `_example()` (what to compile against) and `_batches()` (the split, padded to
  whole batches). Batches are dispatched back to back and summed on the device; one fetch at the
  end gives {eval_loss, eval_accuracy, eval_examples}.
  """

  def __init__(self, model, mesh, spec: InputSpec, mean):
    self._mean = replicate(mean, mesh)
    self._fn = make_eval_fn(model, mesh, spec)
    self.compile_seconds = 0.0

  def compile(self, state: TrainState) -> None:
    t = time.perf_counter()
    self._fn = self._fn.lower(state.params, state.batch_stats, *self._example(),
                              self._mean).compile()
    self.compile_seconds = time.perf_counter() - t

  def __call__(self, state: TrainState) -> dict:
    total = None
    for batch in self._batches():
      sums = self._fn(state.params, state.batch_stats, *batch, self._mean)
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    sums = jax.device_get(total)
    count = max(float(sums['count']), 1.0)
    return {'eval_loss': float(sums['loss']) / count,
            'eval_accuracy': float(sums['correct']) / count,
            'eval_examples': int(sums['count'])}


class Evaluator(_Evaluator):
  """The test split held on the device, padded to whole batches."""

  def __init__(self, model, mesh, spec: InputSpec, images, labels, mean, batch_size: int):
    super().__init__(model, mesh, spec, mean)
    imgs, lbls, mask = pipeline.eval_batches(images, labels, batch_size, mesh.devices.size)
    self._on_device = [shard_leading((imgs[i], lbls[i], mask[i]), mesh) for i in range(len(imgs))]

  def _example(self):
    return self._on_device[0]

  def _batches(self):
    return iter(self._on_device)


class StreamEvaluator(_Evaluator):
  """The test split read from the host at every evaluation (center crops).

  Each host reads its share of every padded batch (`streaming.eval_iterator`), decoding runs a
  few batches ahead in a thread, and each batch is placed on the devices as it comes.
  """

  def __init__(self, model, mesh, spec: InputSpec, config: ml_collections.ConfigDict,
               source=None):
    super().__init__(model, mesh, spec, streaming.mean_rgb(config.data))
    self._config = config
    self._source = source if source is not None else streaming.open_source(config.data, 'test')
    self._sharding = NamedSharding(mesh, P(AXIS))
    self._num_devices = mesh.devices.size

  def _example(self):
    batch = streaming.eval_batch_size(self._config, self._num_devices)
    size = streaming.image_size(self._config.data)
    shape = lambda *dims, dtype: jax.ShapeDtypeStruct(dims, dtype, sharding=self._sharding)
    return (shape(batch, size, size, 3, dtype=jnp.uint8), shape(batch, dtype=jnp.int32),
            shape(batch, dtype=jnp.bool_))

  def _batches(self):
    it = streaming.eval_iterator(
        self._config, process_index=jax.process_index(), process_count=jax.process_count(),
        num_threads=self._config.data.num_threads, multiple_of=self._num_devices,
        source=self._source)
    it = streaming.in_background(it, self._config.data.prefetch)
    for b in streaming.prefetch_to_device(it, self._config.data.prefetch, self._sharding):
      yield b['image'], b['label'], b['mask']


class MemoryFeed:
  """Training input held on the device: every dispatch gets the same replicated arrays."""

  def __init__(self, data: pipeline.InMemoryData, mesh):
    self.data = replicate({'images': data.train_images, 'labels': data.train_labels,
                           'mean': data.mean}, mesh)

  def example(self) -> dict:
    return self.data

  def __next__(self) -> dict:
    return self.data

  def close(self) -> None:
    pass


class StreamFeed:
  """Training input streamed from every host: the batches of the next k updates per dispatch.

  The stream is a pure function of (seed, step) (`streaming.train_iterator`), so a feed opened at
  a resumed run's `start_step` continues exactly. Decoding runs `data.prefetch` dispatches ahead
  in a thread and the transfer to the devices one more ahead.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, start_step: int, k: int,
               source=None):
    d = config.data
    self._sharding = NamedSharding(mesh, P(None, AXIS))
    self._mean = replicate(streaming.mean_rgb(d), mesh)
    self._shape = (k, config.batch_size, streaming.image_size(d), streaming.image_size(d), 3)
    it = streaming.train_iterator(config, process_index=jax.process_index(),
                                  process_count=jax.process_count(), start_step=start_step,
                                  num_threads=d.num_threads, source=source)
    self._host = streaming.in_background(streaming.stack(it, k), d.prefetch)
    self._device = streaming.prefetch_to_device(self._host, 1, self._sharding)

  def example(self) -> dict:
    shape = lambda dims, dtype: jax.ShapeDtypeStruct(dims, dtype, sharding=self._sharding)
    return {'images': shape(self._shape, jnp.uint8), 'labels': shape(self._shape[:2], jnp.int32),
            'mean': self._mean}

  def __next__(self) -> dict:
    b = next(self._device)
    return {'images': b['image'], 'labels': b['label'], 'mean': self._mean}

  def close(self) -> None:
    self._device.close()
    self._host.close()


class MemoryInputs:
  """An in-memory data set, loaded (and so checked) before anything is compiled or written."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.data = pipeline.load(config)
    self.num_classes = self.data.num_classes
    self.image_shape = tuple(self.data.train_images.shape[1:])

  def feed(self, mesh, start_step: int = 0, steps_per_call: int = 1) -> MemoryFeed:
    del start_step, steps_per_call  # the step draws its own batch from (key, step)
    return MemoryFeed(self.data, mesh)

  def evaluator(self, model, mesh, spec: InputSpec) -> Evaluator:
    d = self.data
    return Evaluator(model, mesh, spec, d.test_images, d.test_labels, d.mean,
                     self.config.data.eval_batch_size)


class StreamInputs:
  """A streamed data set: both splits opened (so a missing folder fails early), nothing read."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.train_source = streaming.open_source(config.data, 'train')
    self.test_source = streaming.open_source(config.data, 'test')
    self.num_classes = sources.num_classes(config.data.name)
    size = streaming.image_size(config.data)
    self.image_shape = (size, size, 3)

  def feed(self, mesh, start_step: int = 0, steps_per_call: int = 1) -> StreamFeed:
    return StreamFeed(self.config, mesh, start_step, steps_per_call, source=self.train_source)

  def evaluator(self, model, mesh, spec: InputSpec) -> StreamEvaluator:
    return StreamEvaluator(model, mesh, spec, self.config, source=self.test_source)


def open_inputs(config: ml_collections.ConfigDict) -> MemoryInputs | StreamInputs:
  """The data of `config`: held on the device, or streamed for sets too large (ImageNet).

  Each gives `num_classes`, `image_shape` (what the model sees), `feed(mesh, start_step, k)`
  (the train step's input, from update `start_step` on, k updates per call) and
  `evaluator(model, mesh, spec)`.
  """
  return StreamInputs(config) if sources.streamed(config.data.name) else MemoryInputs(config)


def _divergence_message(sums: dict) -> str:
  return (f"The training loss or gradient became non-finite at update "
          f"{int(sums['nonfinite_step'])} "
          f"(learning rate {float(sums['nonfinite_lr']):.4g}, momentum "
          f"{float(sums['nonfinite_momentum']):.4g}). Try a lower maximum learning rate "
          "(--config.schedule.max_lr), gradient clipping (--config.optimizer.grad_clip_norm), or "
          "run an LR range test (--config.mode=lr_range) to find where training breaks down. "
          "The last good checkpoint is kept.")


# Test hook: 'N:SIGINT' (or N:SIGTERM) makes the run signal itself right after update N, so a test
# lands a preemption on an exact step through the real signal handler. Unset in real runs.
SIGNAL_AT_STEP_ENV = 'SUPERCONV_TEST_SIGNAL_AT_STEP'


def _signal_at_step() -> tuple[int, int] | None:
  value = os.environ.get(SIGNAL_AT_STEP_ENV, '')
  if not value:
    return None
  step, name = value.split(':')
  return int(step), int(getattr(signal, name))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the summary.

  `devices`: the devices of the mesh (default: every device of every process).
  """
  from superconv import config_checks  # pylint: disable=g-import-not-at-top
  from superconv import lr_range  # pylint: disable=g-import-not-at-top
  config = lr_range.apply_suggestion(config)  # LR bounds from a range test, if one is named
  config_checks.validate(config)
  t_start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  metrics_lib.write_json(os.path.join(workdir, 'config.json'), config.to_dict())

  mesh = make_mesh(devices)
  inputs = open_inputs(config)  # bad data fails here, before a checkpoint folder or a compile
  model = build_model(config, inputs.num_classes)
  tx = optim.create_optimizer(config)
  spec = input_spec(config)
  k = dispatch_size(config)
  logging.info('%d devices (%s); %d updates per dispatch; model %s; %s %s input.',
               mesh.devices.size, jax.devices()[0].device_kind, k, config.model.name,
               config.data.name, 'streamed' if spec.streamed else 'in-memory')

  init = lambda: create_train_state(model, tx, jax.random.PRNGKey(config.seed), inputs.image_shape,
                                    mesh, lr_estimate=bool(config.lr_estimate.enabled))
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
  state, start_step = checkpointer.restore_latest(abstract_state(init))
  if state is None:
    state, start_step = init(), 0
  else:
    logging.info('Resumed from the checkpoint at update %d.', start_step)
  writer = metrics_lib.MetricWriter(os.path.join(workdir, 'metrics.jsonl'),
                                    resume_step=start_step)

  feed, evaluator = inputs.feed(mesh, start_step, k), inputs.evaluator(model, mesh, spec)
  t = time.perf_counter()
  train_fn = make_train_fn(model, tx, mesh, spec, k).lower(state, feed.example()).compile()
  compile_seconds = time.perf_counter() - t
  evaluator.compile(state)
  compile_seconds += evaluator.compile_seconds
  logging.info('Compiled in %.1f s.', compile_seconds)

  # The evaluations before a resume count for the best accuracy of the run.
  evals = [(r['step'], r['eval_accuracy']) for r in writer.rows if 'eval_accuracy' in r]
  num_steps = config.num_steps
  if config.stop_after_steps:
    num_steps = min(num_steps, int(config.stop_after_steps))
  step = start_step
  train_seconds = eval_seconds = 0.0
  images_done = 0
  window_start, window_images, window_paused = time.perf_counter(), 0, 0.0
  bar = None
  if is_main and config.progress_bar:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=num_steps, initial=step, unit='step', dynamic_ncols=True,
                    desc=config.model.name)

  def boundary(every):
    return bool(every) and step % every == 0

  def stop_if_diverged(sums):
    if int(sums['nonfinite_step']) >= 0:
      if bar is not None:
        bar.close()
      raise TrainingDiverged(_divergence_message(sums))

  preempted = ''
  signal_at = _signal_at_step()
  # Closing the feed stops its reader threads however the loop ends.
  with ckpt_lib.PreemptionFlag() as flag, contextlib.closing(feed):
    while step < num_steps:
      state = train_fn(state, next(feed))
      step += k
      if signal_at and step == signal_at[0]:
        os.kill(os.getpid(), signal_at[1])
      window_images += k * config.batch_size
      if bar is not None:
        bar.update(k)
      row = {}
      last = step >= num_steps
      if boundary(config.log_every_steps) or last:
        sums = jax.device_get(state.sums)
        elapsed = time.perf_counter() - window_start - window_paused
        train_seconds += elapsed
        images_done += window_images
        stop_if_diverged(sums)
        hp = jax.device_get(hyperparams(state.opt_state))
        n = max(int(sums['steps']), 1)
        row.update(step=step, lr=float(hp['learning_rate']), momentum=float(hp['momentum']),
                   train_loss=float(sums['loss']) / n,
                   train_accuracy=float(sums['correct']) / max(float(sums['count']), 1.0),
                   grad_norm=float(sums['grad_norm']), param_norm=float(sums['param_norm']),
                   images_per_sec=window_images / max(elapsed, 1e-9))
        if state.aux:
          row.update(lr_estimate=float(state.aux['estimate']),
                     lr_estimate_ema=float(state.aux['estimate_ema']))
        state = _reset_sums(state)
        if bar is not None:
          bar.set_postfix(lr=f"{row['lr']:.3g}", loss=f"{row['train_loss']:.3f}",
                          img_s=f"{row['images_per_sec']:.0f}", refresh=False)
        window_start, window_images, window_paused = time.perf_counter(), 0, 0.0
      paused_from = time.perf_counter()
      if boundary(config.eval_every_steps) or last:
        t = time.perf_counter()
        row.update(step=step, **evaluator(state))
        eval_seconds += time.perf_counter() - t
        evals.append((step, row['eval_accuracy']))
        if bar is not None:
          bar.write(f"step {step}: eval accuracy {row['eval_accuracy']:.4f}, "
                    f"loss {row['eval_loss']:.4f}")
      if row:
        writer.write(row)
      # Asking every process is a collective; on one process it is free, on many do it per log.
      check = jax.process_count() == 1 or boundary(config.log_every_steps)
      if not last and not preempted and check and flag.is_set():
        preempted = flag.signal_name
      if boundary(config.checkpoint_every_steps) or last or preempted:
        stop_if_diverged(jax.device_get(state.sums))  # never checkpoint a diverged state
        checkpointer.save(step, state)
      if preempted:
        break
      window_paused += time.perf_counter() - paused_from
  if bar is not None:
    bar.close()
  checkpointer.close()

  if preempted:
    msg = (f'Received {preempted}: saved a checkpoint at update {step} of {num_steps} in '
           f'{checkpointer.directory}. Run the same command again to resume.')
    logging.warning(msg)
    print(msg, flush=True)
    return {'preempted': True, 'step': step}

  best_step, best_acc = max(evals, key=lambda e: e[1]) if evals else (None, None)
  summary = {
      'final_eval_accuracy': evals[-1][1] if evals else None,
      'best_eval_accuracy': best_acc, 'best_step': best_step,
      'steps': step, 'resumed_from': start_step or None,
      'wall_seconds': time.perf_counter() - t_start,
      'train_seconds': train_seconds, 'eval_seconds': eval_seconds,
      'compile_seconds': compile_seconds,
      'images_per_sec': images_done / max(train_seconds, 1e-9),
      'config': config.model.name + ' / ' + config.schedule.name,
      **metrics_lib.provenance(),
  }
  metrics_lib.write_json(os.path.join(workdir, 'summary.json'), summary)
  if is_main:
    print(json.dumps({k: summary[k] for k in ('final_eval_accuracy', 'best_eval_accuracy',
                                               'steps', 'wall_seconds', 'images_per_sec')}))
    if config.data.source == 'fake' and evals:
      print(_generated_data_note(config, evals[-1][1]), flush=True)
  return summary


def _generated_data_note(config: ml_collections.ConfigDict, accuracy: float) -> str:
  """What a run on generated images showed, and the command that trains on real data."""
  chance = 1 / sources.num_classes(config.data.name)
  return (
      f'This was a check on generated images ({config.model.name}, {config.num_steps} updates): '
      f'it ended at {accuracy:.1%} test accuracy against {chance:.0%} for chance, so the '
      'pipeline, model, optimizer and schedule work on this machine. Next, the paper\'s Fig. 1a '
      'run on real CIFAR-10 (a GPU or TPU is advised; on a 2-core CPU see '
      'experiments/cifar10_subset_cpu.sh):\n  python -m superconv.main '
      '--config=configs/resnet56.py:data=../shared/data/cifar10-jpeg.tar.gz --workdir=runs/resnet56')
