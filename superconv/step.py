"""The engine: the train state, the jitted SPMD train step, and the eval step.

No config files, paths or programs here. A model enters only through `model_adapter.adapt`, so a
Linen module, an NNX module or a plain function trains through the same step.

The train step is `jax.jit(jax.shard_map(...))` over the 1-D ('data',) mesh: each device takes
its slice of the global batch (drawn from a dataset held in device memory, or, for ImageNet,
streamed from its host), runs the model (BatchNorm statistics are per device, as on the paper's
8 GPUs), and the gradients are averaged with `pmean`. Several updates can run per dispatch under
`lax.scan`; metric sums stay on the device until a log point.

Everything random is a function of (seed, step): which examples form the batch, the flips and
crops, dropout. A checkpoint therefore only needs the state, and a resumed run repeats exactly
what the uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

from flax import struct
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import optax

from superconv import lr_estimate
from superconv import model_adapter
from superconv import models
from superconv import optim
from superconv import platform
from superconv.data import pipeline
from superconv.data import sources
from superconv.sharding import AXIS


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
class StepSpec:
  """Static description of the step's input pipeline (hashable: part of the compiled step)."""
  batch_size: int          # global batch
  mirror: bool = True
  crop_padding: int = 0
  scale: float = 1.0
  dtype: Any = jnp.float32  # compute dtype of the images
  lr_estimate_ema: float = 0.0  # > 0: track the paper's LR estimate with this EMA factor
  streamed: bool = False    # batches arrive from the host (ImageNet) instead of an on-device set

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'StepSpec':
    d = config.data
    return cls(batch_size=config.batch_size, mirror=d.mirror, crop_padding=d.crop_padding,
               scale=d.scale, dtype=jnp.dtype(config.model.dtype),
               lr_estimate_ema=float(config.lr_estimate.ema) if config.lr_estimate.enabled
               else 0.0, streamed=sources.streamed(d.name))


def zero_sums() -> dict:
  f32 = jnp.float32
  return dict(loss=jnp.zeros((), f32), correct=jnp.zeros((), f32), count=jnp.zeros((), f32),
              steps=jnp.zeros((), jnp.int32), grad_norm=jnp.zeros((), f32),
              param_norm=jnp.zeros((), f32), nonfinite_step=jnp.full((), -1, jnp.int32),
              nonfinite_lr=jnp.zeros((), f32), nonfinite_momentum=jnp.zeros((), f32))



# The packed state: one flat buffer per dtype between calls.
#
# Dispatch cost grows with the number of arrays a jitted call takes and returns, not with their
# size (the ResNet-56 state has 568 arrays). So the training loop and the range test hold the
# state as a few buffers (`pack`) and the jitted step unpacks them inside (slices and reshapes,
# which XLA fuses into their consumers) and packs its result again (one concatenate per dtype,
# written into the donated input buffers). Checkpoints, evaluation and user code see the pytree
# (`unpack`); the two forms round-trip exactly (bit copies).


@dataclasses.dataclass(frozen=True)
class PackLayout:
  """Where each leaf of a TrainState lives in the packed buffers (static, hashable)."""
  treedef: Any
  dtypes: tuple[str, ...]                           # one buffer per dtype, in this order
  leaves: tuple[tuple[int, tuple[int, ...], int], ...]  # (buffer index, shape, offset) per leaf
  sizes: tuple[int, ...]                            # elements of each buffer


@jax.tree_util.register_pytree_node_class
class PackedState:
  """A TrainState as one flat buffer per dtype (`buffers`) and its static `layout`."""

  def __init__(self, buffers: tuple, layout: PackLayout):
    self.buffers = tuple(buffers)
    self.layout = layout

  def tree_flatten(self):
    return self.buffers, self.layout

  @classmethod
  def tree_unflatten(cls, layout, buffers):
    return cls(buffers, layout)


def pack_layout(state: TrainState) -> PackLayout:
  """The layout of `state` (concrete or abstract: only shapes and dtypes are read)."""
  leaves, treedef = jax.tree.flatten(state)
  dtypes = tuple(sorted({jnp.dtype(x.dtype).name for x in leaves}))
  sizes = [0] * len(dtypes)
  where = []
  for x in leaves:
    b = dtypes.index(jnp.dtype(x.dtype).name)
    where.append((b, tuple(x.shape), sizes[b]))
    sizes[b] += math.prod(x.shape)
  return PackLayout(treedef, dtypes, tuple(where), tuple(sizes))


def _pack(state: TrainState, layout: PackLayout | None = None) -> PackedState:
  layout = layout or pack_layout(state)
  leaves, treedef = jax.tree.flatten(state)
  if treedef != layout.treedef:
    raise ValueError(f'the state does not have the packed layout: {treedef} vs {layout.treedef}')
  parts = [[] for _ in layout.dtypes]
  for x, (b, _, _) in zip(leaves, layout.leaves):  # leaves in offset order within each buffer
    parts[b].append(jnp.ravel(x))
  return PackedState(tuple(jnp.concatenate(p) for p in parts), layout)


def _unpack(packed: PackedState) -> TrainState:
  layout = packed.layout
  leaves = [lax.slice_in_dim(packed.buffers[b], off, off + math.prod(shape)).reshape(shape)
            for b, shape, off in layout.leaves]
  return jax.tree.unflatten(layout.treedef, leaves)


pack = jax.jit(_pack, static_argnums=1)
pack.__doc__ = """`pack(state) -> PackedState`: the state as one flat buffer per dtype (jitted)."""
unpack = jax.jit(_unpack)
unpack.__doc__ = """`unpack(packed) -> TrainState`: the pytree again, bit for bit (jitted)."""


packs_by_default = platform.packs_by_default  # whether programs hold the state packed


def hold(state: TrainState, packed: bool) -> TrainState | PackedState:
  """The form a program carries between boundaries (`packs_by_default`)."""
  return pack(state) if packed else state


def as_state(state: TrainState | PackedState) -> TrainState:
  """The pytree form of either form (an unpack for a PackedState)."""
  return unpack(state) if isinstance(state, PackedState) else state


def _on_pytree(fn, state):
  """`fn` applied to the pytree form of `state`, the result in the form `state` came in."""
  if isinstance(state, PackedState):
    return _pack(fn(_unpack(state)), state.layout)
  return fn(state)


def create_train_state(model, tx: optax.GradientTransformation, key: jax.Array,
                       image_shape: tuple[int, ...], mesh, *,
                       lr_estimate: bool = False) -> TrainState:
  """Initialises parameters, BN statistics and optimizer state, replicated over the mesh.

  `model`: anything `model_adapter.adapt` takes (a Linen or NNX module, an adapter).
  """
  adapter = model_adapter.adapt(model)

  def init(key):
    init_key, run_key = jax.random.split(key)
    params, batch_stats = adapter.init(init_key, jnp.zeros((1, *image_shape), jnp.float32))
    aux = {}
    if lr_estimate:  # the previous update and its LR, and the smoothed estimate (m0 = 0.1)
      aux = {'prev_update': jax.tree.map(jnp.zeros_like, params),
             'prev_lr': jnp.zeros((), jnp.float32), 'estimate': jnp.zeros((), jnp.float32),
             'estimate_ema': jnp.full((), 0.1, jnp.float32)}
    return new_state(params, batch_stats, tx.init(params), run_key, aux=aux)

  return jax.jit(init, out_shardings=NamedSharding(mesh, P()))(key)


def new_state(params, batch_stats, opt_state, key: jax.Array, *, aux: dict | None = None,
              step: int = 0) -> TrainState:
  """A state at update `step` with these weights, statistics and optimizer state, sums zeroed."""
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=opt_state, key=key, sums=zero_sums(), aux=aux or {})


def abstract_state(state_fn: Callable[[], TrainState]) -> Any:
  """Shapes, dtypes and shardings of a state without computing it (for checkpoint restore)."""
  return jax.eval_shape(state_fn)


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


def _memory_batch(state: TrainState, data: dict, spec: StepSpec, num_devices: int):
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


def _streamed_batch(data: dict, spec: StepSpec):
  """This device's slice of a streamed batch: cropped and flipped on the host, normalised here."""
  images = pipeline.preprocess_eval(data['images'], mean=data['mean'], scale=spec.scale,
                                    dtype=spec.dtype)
  return images, data['labels']


def _local_train_step(state: TrainState, data: dict, *, model, tx, spec: StepSpec,
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
    logits, batch_stats = model.apply(params, state.batch_stats, images, train=True,
                                      dropout_key=dropout_key)
    return _cross_entropy(logits, labels).mean(), (logits, batch_stats)

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


def make_train_fn(model, tx, mesh, spec: StepSpec, steps_per_call: int, *,
                  packed: bool = False):
  """`fn(state, data) -> state` running `steps_per_call` updates; jitted, state donated.

  `packed=True`: `fn(PackedState, data) -> PackedState` (`pack`), the same updates,
  unpacked and packed again inside the jitted program so a call passes a few buffers instead of
  every array of the state (the host cost of a dispatch; see `PackedState`).

  In memory: `data` = {'images': [N, H, W, C], 'labels': int32[N], 'mean': [H, W, C]},
  replicated, the same every call. Streamed (`spec.streamed`): `data` = {'images': uint8
  [steps_per_call, B, S, S, 3], 'labels': int32 [steps_per_call, B]} sharded over 'data' along
  B, and 'mean' (replicated): the batches of the next `steps_per_call` updates.
  """
  model = model_adapter.adapt(model)
  num_devices = mesh.devices.size
  if spec.batch_size % num_devices:
    raise ValueError(f'batch_size={spec.batch_size} is not divisible by the {num_devices} devices '
                     'of the mesh; choose a multiple of the device count.')
  step = functools.partial(_local_train_step, model=model, tx=tx, spec=spec,
                           num_devices=num_devices)
  unroll = True if platform.unrolls_updates(mesh.devices.flat[0].platform) else 1

  def multi_step(state, data):
    if spec.streamed:
      batches = {'images': data['images'], 'labels': data['labels']}
      if steps_per_call == 1:
        return step(state, {**jax.tree.map(lambda x: x[0], batches), 'mean': data['mean']})
      body = lambda s, b: (step(s, {**b, 'mean': data['mean']}), None)
      return lax.scan(body, state, batches, unroll=unroll)[0]
    if steps_per_call == 1:
      return step(state, data)
    state, _ = lax.scan(lambda s, _: (step(s, data), None), state, None, length=steps_per_call,
                        unroll=unroll)
    return state

  data_spec = P()
  if spec.streamed:
    data_spec = {'images': P(None, AXIS), 'labels': P(None, AXIS), 'mean': P()}
  sharded = jax.shard_map(multi_step, mesh=mesh, in_specs=(P(), data_spec), out_specs=P())
  if packed:
    # Outside the shard_map: the packed buffers are replicated like the state, and the output
    # buffers have the input's shapes, so donation writes the new state over the old. XLA fuses
    # the slices into their consumers and the update's last fusions into the concatenates.
    # The weights, BN statistics, optimizer state, key, step and loss sums come out bit-identical
    # to the pytree step's on 1 device; on 4, a cross-device sum may be ordered differently in
    # the two programs (1 ulp in one weight was seen on jaxlib 0.12.0.1), so floats agree to
    # rounding (tests/test_packed_state.py). Logged diagnostics
    # that are global reductions (`param_norm`, the LR estimate) can differ by an ulp or two:
    # XLA:CPU splits them differently in the fused program; they never feed back into an update.
    # (Optimization barriers around the step made the LR estimate exact on one device, not
    # param_norm on four, and cost 1.6x the compile time: measured, dropped.)
    def packed_fn(p, data):
      return _pack(sharded(_unpack(p), data), p.layout)
    return jax.jit(packed_fn, donate_argnums=0)
  return jax.jit(sharded, donate_argnums=0)


def make_eval_fn(model, mesh, spec: StepSpec):
  """`fn(params, batch_stats, images, labels, mask, mean) -> {loss, correct, count}` for one batch.

  The batch is sharded over 'data'; padding examples carry mask 0, so the last partial batch of
  a split is counted and nothing else. One compiled program serves every batch of the split.
  """
  model = model_adapter.adapt(model)

  def local_eval(params, batch_stats, images, labels, mask, mean):
    x = pipeline.preprocess_eval(images, mean=mean, scale=spec.scale, dtype=spec.dtype)
    logits, _ = model.apply(params, batch_stats, x, train=False)
    mask = mask.astype(jnp.float32)
    loss = jnp.sum(_cross_entropy(logits, labels) * mask)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * mask)
    return {'loss': lax.psum(loss, AXIS), 'correct': lax.psum(correct, AXIS),
            'count': lax.psum(mask.sum(), AXIS)}

  sharded = jax.shard_map(local_eval, mesh=mesh, out_specs=P(),
                          in_specs=(P(), P(), P(AXIS), P(AXIS), P(AXIS), P()))
  return jax.jit(sharded)


# Recalibration batches are drawn from their own stream (the run key folded with this), so they
# never coincide with the training batches of any update by construction of the key.
RECALIBRATION_STREAM = 0x5EC0


def make_eval_point_fn(model, mesh, spec: StepSpec, num_batches: int):
  """`fn(state, data) -> state`: the weights and BN statistics an evaluation reads.

  The weights are `optim.eval_params(opt_state, params)` (schedule-free's average x; the params
  themselves for other optimizers). With `num_batches` > 0 and a model with BN statistics, those
  statistics are then recomputed at the evaluated weights by `num_batches` train-mode forward
  passes (no update), each folding its batch's statistics into the running averages with the
  model's BN momentum, as a training step would, starting from the state's statistics. Batch i
  is the training batch `_memory_batch` draws at step i with the key
  `fold_in(state.key, RECALIBRATION_STREAM)`. The training state itself is not changed.

  `data`: the in-memory training set as the train step takes it.
  """
  model = model_adapter.adapt(model)
  num_devices = mesh.devices.size
  average = jax.jit(lambda s: s.replace(params=optim.eval_params(s.opt_state, s.params)))

  def local_recalibrate(params, batch_stats, key, i, data):
    draw = TrainState(step=i, params=params, batch_stats=batch_stats, opt_state=(), key=key,
                      sums={})
    images, _ = _memory_batch(draw, data, spec, num_devices)
    _, batch_stats = model.apply(params, batch_stats, images, train=True,
                                 dropout_key=jax.random.fold_in(key, i))
    return lax.pmean(batch_stats, AXIS)

  recalibrate = jax.jit(jax.shard_map(local_recalibrate, mesh=mesh, in_specs=(P(),) * 5,
                                      out_specs=P()))

  def fn(state: TrainState, data: dict) -> TrainState:
    state = average(state)
    if not num_batches or not jax.tree.leaves(state.batch_stats):
      return state
    key = jax.random.fold_in(state.key, RECALIBRATION_STREAM)
    stats = state.batch_stats
    for i in range(num_batches):  # one dispatch per batch: a loop body keeps XLA:CPU's slow convs
      stats = recalibrate(state.params, stats, key, jnp.asarray(i, jnp.int32), data)
    return state.replace(batch_stats=stats)

  return fn


@jax.jit
def reset_sums(state: TrainState | PackedState) -> TrainState | PackedState:
  """The state (either form) with its metric sums zeroed (after a log row has read them)."""
  return _on_pytree(lambda s: s.replace(sums=zero_sums()), state)


@jax.jit
def log_values(state: TrainState | PackedState) -> dict:
  """What a log row reads from the state (either form): the sums, LR and momentum, the
  LR estimate if tracked. A few scalars, so reading them from a packed state stays cheap."""
  s = _unpack(state) if isinstance(state, PackedState) else state
  out = {'sums': s.sums, 'hyperparams': hyperparams(s.opt_state)}
  if s.aux:
    out['lr_estimate'] = {'estimate': s.aux['estimate'], 'estimate_ema': s.aux['estimate_ema']}
  return out


def make_pop_loss(mesh):
  """`fn(state) -> (loss sum, state with that sum zeroed)`, jitted, the state (either form:
  TrainState or PackedState) donated (no copy).

  For programs that read every update's loss (the range test) without a full log row.
  """

  def pop(state: TrainState | PackedState):
    s = _unpack(state) if isinstance(state, PackedState) else state
    loss = s.sums['loss']
    zeroed = lambda s: s.replace(sums={**s.sums, 'loss': jnp.zeros_like(loss)})
    return loss, _on_pytree(zeroed, state)
  return jax.jit(pop, donate_argnums=0, out_shardings=NamedSharding(mesh, P()))


def dispatch_size(config: ml_collections.ConfigDict, backend: str | None = None) -> int:
  """Updates per dispatch: the largest divisor of `steps_per_dispatch` that lands on every
  log, eval and checkpoint boundary and on the end, so the step compiles exactly once.

  The divisor of `platform.steps_per_dispatch(config, backend)` (the CPU's and the accelerators'
  fields differ there).
  """
  k = platform.steps_per_dispatch(config, backend)
  for every in (config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps,
                config.num_steps, config.stop_after_steps):
    if every:
      k = math.gcd(k, int(every))
  return k


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> model_adapter.Adapter:
  """The model of `config.model` for a dataset of `num_classes` classes, adapted."""
  m = config.model
  return model_adapter.adapt(models.create_model(
      m.name, num_classes=num_classes, dtype=m.dtype, bn_momentum=m.bn_momentum,
      bn_epsilon=m.bn_epsilon, virtual_batch_size=m.virtual_batch_size,
      dropout_rate=m.dropout_rate))


def divergence_message(sums: dict) -> str:
  """What a user reads when `sums` recorded a non-finite loss or gradient."""
  return (f"The training loss or gradient became non-finite at update "
          f"{int(sums['nonfinite_step'])} "
          f"(learning rate {float(sums['nonfinite_lr']):.4g}, momentum "
          f"{float(sums['nonfinite_momentum']):.4g}). Try a lower maximum learning rate "
          "(--config.schedule.max_lr), gradient clipping (--config.optimizer.grad_clip_norm), or "
          "run an LR range test (--config.mode=lr_range) to find where training breaks down.")
