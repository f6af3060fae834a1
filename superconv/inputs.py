"""What a program reads: the training feed and the evaluator of a config's data.

`open_inputs(config)` returns the data held on the device (`MemoryInputs`) or streamed from every
host (`StreamInputs`, for sets too large: ImageNet). Each gives `num_classes`, `image_shape` (what
the model sees), `feed(mesh, start_step, k)` (the train step's input from update `start_step`
on, k updates per call) and `evaluator(model, mesh, spec)` (the test split, evaluated in one
compiled program over whole padded batches).

This is where a run's config is taken apart: the data layer (`superconv.data`) is given
`config.data` and, by name, the few run values it needs (the global batch size and the seed of a
streamed set's order), never the whole config.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections

from superconv import optim
from superconv import step as step_lib
from superconv.data import pipeline
from superconv.data import sources
from superconv.data import streaming
from superconv.sharding import AXIS, replicate, shard_leading


class _Evaluator:
  """Evaluation compiled once, over batches (images, labels, mask) sharded along 'data'.

  Subclasses give `_example()` (what to compile against) and `_batches()` (the split, padded to
  whole batches). Batches are dispatched back to back and summed on the device; one fetch at the
  end gives {eval_loss, eval_accuracy, eval_examples}.
  """

  def __init__(self, model, mesh, spec: step_lib.StepSpec, mean):
    self._mean = replicate(mean, mesh)
    self._fn = step_lib.make_eval_fn(model, mesh, spec)
    self.compile_seconds = 0.0
    # The hook an optimizer's evaluation point needs (schedule-free: the average x, BN
    # statistics recomputed there): state -> the state to evaluate. None: the state as it is.
    self.prepare = None

  def compile(self, state: step_lib.TrainState) -> None:
    t = time.perf_counter()
    self._fn = self._fn.lower(state.params, state.batch_stats, *self._example(),
                              self._mean).compile()
    self.compile_seconds = time.perf_counter() - t

  def __call__(self, state: step_lib.TrainState) -> dict:
    if self.prepare is not None:
      state = self.prepare(state)
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

  def __init__(self, model, mesh, spec: step_lib.StepSpec, images, labels, mean, batch_size: int):
    super().__init__(model, mesh, spec, mean)
    self.num_examples = int(len(labels))
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

  def __init__(self, model, mesh, spec: step_lib.StepSpec, data_cfg: ml_collections.ConfigDict,
               source=None):
    super().__init__(model, mesh, spec, streaming.mean_rgb(data_cfg))
    self._data = data_cfg
    self._source = source if source is not None else streaming.open_source(data_cfg, 'test')
    self.num_examples = sources.SPECS[data_cfg.name].test_size
    self._sharding = NamedSharding(mesh, P(AXIS))
    self._num_devices = mesh.devices.size

  def _example(self):
    batch = streaming.eval_batch_size(self._data, self._num_devices)
    size = streaming.image_size(self._data)
    shape = lambda *dims, dtype: jax.ShapeDtypeStruct(dims, dtype, sharding=self._sharding)
    return (shape(batch, size, size, 3, dtype=jnp.uint8), shape(batch, dtype=jnp.int32),
            shape(batch, dtype=jnp.bool_))

  def _batches(self):
    it = streaming.eval_iterator(
        self._data, process_index=jax.process_index(), process_count=jax.process_count(),
        num_threads=self._data.num_threads, multiple_of=self._num_devices,
        source=self._source)
    it = streaming.in_background(it, self._data.prefetch)
    for b in streaming.prefetch_to_device(it, self._data.prefetch, self._sharding):
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
    it = streaming.train_iterator(d, batch_size=config.batch_size, seed=config.seed,
                                  process_index=jax.process_index(),
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
  """An in-memory data set, loaded (and so checked) before anything is compiled or written.

  `eval_split`, `eval_examples`, `eval_seed`: what the evaluator reads (`pipeline.load`): the
  test split (default), a fixed draw of it, or a validation split held out of training.
  """

  def __init__(self, config: ml_collections.ConfigDict, **eval_kw):
    self.config = config
    if not eval_kw and config.data.get('validation_examples', 0):
      # Evaluate on training examples held out (tuning never reads the test split).
      eval_kw = {'eval_split': 'validation',
                 'eval_examples': int(config.data.validation_examples)}
    self.data = pipeline.load(config.data, **eval_kw)
    self.num_classes = self.data.num_classes
    self.image_shape = tuple(self.data.train_images.shape[1:])

  def feed(self, mesh, start_step: int = 0, steps_per_call: int = 1) -> MemoryFeed:
    del start_step, steps_per_call  # the step draws its own batch from (key, step)
    return MemoryFeed(self.data, mesh)

  def evaluator(self, model, mesh, spec: step_lib.StepSpec) -> Evaluator:
    d = self.data
    evaluator = Evaluator(model, mesh, spec, d.test_images, d.test_labels, d.mean,
                          self.config.data.eval_batch_size)
    o = self.config.optimizer
    if o.name in optim.SCHEDULE_FREE:  # evaluate at x, BN statistics recomputed there
      point = step_lib.make_eval_point_fn(model, mesh, spec, int(o.eval_bn_batches))
      train = None

      def prepare(state):
        nonlocal train
        if train is None:  # replicated on the first evaluation only
          train = replicate({'images': d.train_images, 'labels': d.train_labels,
                             'mean': d.mean}, mesh)
        return point(state, train)

      evaluator.prepare = prepare
    return evaluator


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

  def evaluator(self, model, mesh, spec: step_lib.StepSpec) -> StreamEvaluator:
    o = self.config.optimizer
    if o.name in optim.SCHEDULE_FREE and o.eval_bn_batches:
      raise sources.DataError(
          f'{self.config.data.name} is streamed: recomputing the BN statistics of a schedule-free '
          'run before evaluation needs an in-memory training set; set '
          'optimizer.eval_bn_batches=0 (evaluates x with the statistics of y)')
    evaluator = StreamEvaluator(model, mesh, spec, self.config.data, source=self.test_source)
    if o.name in optim.SCHEDULE_FREE:
      point = step_lib.make_eval_point_fn(model, mesh, spec, 0)
      evaluator.prepare = lambda state: point(state, None)
    return evaluator


def open_inputs(config: ml_collections.ConfigDict, **eval_kw) -> MemoryInputs | StreamInputs:
  """The data of `config`: held on the device, or streamed for sets too large (ImageNet).

  Each gives `num_classes`, `image_shape` (what the model sees), `feed(mesh, start_step, k)`
  (the train step's input, from update `start_step` on, k updates per call) and
  `evaluator(model, mesh, spec)`. `eval_kw` (in-memory sets only): `MemoryInputs`.
  """
  if sources.streamed(config.data.name):
    if eval_kw.get('eval_split', 'test') != 'test' or eval_kw.get('eval_examples'):
      raise sources.DataError(f'{config.data.name} is streamed: it evaluates on its whole test '
                              'split (no held-out validation split or evaluation subset)')
    return StreamInputs(config)
  return MemoryInputs(config, **eval_kw)
