"""Validation of a whole config before anything is loaded or compiled.

Every check raises `ConfigError` with the name of the field at fault, so a typo costs a second,
not a compile and a crash deep inside JAX.
"""

from __future__ import annotations

import jax
import ml_collections

from superconv import models
from superconv import optim
from superconv import summary_writers
from superconv.data import sources

# Examples per split of the datasets superconv knows (TFDS sizes).
SPLIT_SIZES = {
    'cifar10': {'train': 50_000, 'test': 10_000},
    'cifar100': {'train': 50_000, 'test': 10_000},
    'mnist': {'train': 60_000, 'test': 10_000},
    'fashion_mnist': {'train': 60_000, 'test': 10_000},
    'imagenet2012': {'train': 1_281_167, 'test': 50_000},
    'fake': None,
}
MODES = ('train', 'lr_range')
SOURCES = ('tfds', 'files', 'fake')
DTYPES = ('float32', 'bfloat16', 'float16')


class ConfigError(ValueError):
  """A config field holds a value superconv cannot run."""


def _require(ok: bool, field: str, message: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field}: {message}')


def validate(config: ml_collections.ConfigDict, *, num_devices: int | None = None) -> None:
  """Raises ConfigError for the first field that cannot work. Cheap: no data, no compile."""
  _require(config.mode in MODES, 'mode', f'{config.mode!r} is not one of {MODES}.')
  for field in ('num_steps', 'batch_size'):
    _require(int(config[field]) > 0, field, f'must be a positive integer, got {config[field]}.')
  for field in ('eval_every_steps', 'log_every_steps', 'checkpoint_every_steps',
                'stop_after_steps'):
    _require(int(config[field]) >= 0, field, f'must be >= 0, got {config[field]}.')
  _require(int(config.steps_per_dispatch) >= 1, 'steps_per_dispatch',
           f'must be >= 1, got {config.steps_per_dispatch}.')

  num_devices = num_devices or jax.device_count()
  _require(config.batch_size % num_devices == 0, 'batch_size',
           f'{config.batch_size} is not divisible by the {num_devices} devices; use a multiple '
           f'of {num_devices} (e.g. {num_devices * max(1, config.batch_size // num_devices)}).')
  vbs = int(config.model.virtual_batch_size)
  if vbs:
    local = config.batch_size // num_devices
    _require(vbs > 0 and local % vbs == 0, 'model.virtual_batch_size',
             f'{vbs} must divide the per-device batch {local} '
             f'(batch_size {config.batch_size} / {num_devices} devices).')

  try:
    models.create_model(config.model.name, num_classes=int(config.model.num_classes))
  except ValueError as e:
    raise ConfigError(f'config.model.name: {e}') from None
  _require(config.model.dtype in DTYPES, 'model.dtype', f'{config.model.dtype!r} not in {DTYPES}.')
  _require(0.0 <= config.model.bn_momentum < 1.0, 'model.bn_momentum',
           f'the moving-average fraction must be in [0, 1), got {config.model.bn_momentum}.')
  _require(0.0 <= config.model.dropout_rate < 1.0, 'model.dropout_rate',
           f'must be in [0, 1), got {config.model.dropout_rate}.')

  d = config.data
  _require(d.name in SPLIT_SIZES, 'data.name',
           f'unknown dataset {d.name!r}; known: {", ".join(SPLIT_SIZES)}.')
  _require(d.source in SOURCES, 'data.source', f'{d.source!r} not in {SOURCES}.')
  _require(d.source != 'files' or bool(d.path), 'data.path',
           "is empty but data.source='files' needs a file or folder.")
  _require(d.mean in ('pixel', 'channel', 'none'), 'data.mean',
           f"{d.mean!r} not in ('pixel', 'channel', 'none').")
  _require(d.crop_padding >= 0, 'data.crop_padding', f'must be >= 0, got {d.crop_padding}.')
  _require(d.eval_batch_size > 0, 'data.eval_batch_size', 'must be positive.')
  _require(d.train_subset >= 0, 'data.train_subset', f'must be >= 0, got {d.train_subset}.')
  sizes = SPLIT_SIZES[d.name] if d.source != 'fake' else {'train': d.fake_num_train}
  if d.train_subset and sizes:
    _require(d.train_subset <= sizes['train'], 'data.train_subset',
             f'{d.train_subset} is larger than the {sizes["train"]} training examples of '
             f'{d.name}.')

  if sources.streamed(d.name):
    # Read per host as crops of the decoded images: no mean image, pad-and-crop or subset.
    _require(d.mean != 'pixel', 'data.mean',
             f"{d.name} is streamed: subtract its per-channel mean ('channel') or 'none'; a "
             "'pixel' mean image would need a pass over the whole set.")
    _require(d.crop_padding == 0, 'data.crop_padding',
             f'{d.name} is streamed with random-resized crops; pad-and-crop does not apply, set 0.')
    _require(d.train_subset == 0, 'data.train_subset',
             f'{d.name} is streamed; training on a subset is supported for in-memory sets only.')
    _require(d.image_size >= 0, 'data.image_size', f'must be >= 0, got {d.image_size}.')
    _require(d.num_threads >= 1 and d.prefetch >= 1, 'data.num_threads',
             f'data.num_threads and data.prefetch must be >= 1, got {d.num_threads}, '
             f'{d.prefetch}.')

  try:
    optim.check_schedule(config)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _require(config.optimizer.name in optim.OPTIMIZERS, 'optimizer.name',
           f'{config.optimizer.name!r} not in {tuple(optim.OPTIMIZERS)}.')
  # Momentum (or Adam's b1) of 1 or more never forgets a gradient: the velocity grows without
  # bound. The schedule factories accept any number, so the range is checked here.
  m = config.momentum_schedule
  fields = ('value',) if m.name == 'constant' else ('min_momentum', 'max_momentum')
  for field in fields:
    _require(0.0 <= m[field] < 1.0, f'momentum_schedule.{field}',
             f'must be in [0, 1), got {m[field]}.')
  if m.name != 'constant':
    _require(m.min_momentum <= m.max_momentum, 'momentum_schedule.min_momentum',
             f'{m.min_momentum} is above momentum_schedule.max_momentum={m.max_momentum}.')
  for field in ('weight_decay', 'grad_clip_norm'):
    _require(config.optimizer[field] >= 0, f'optimizer.{field}',
             f'must be >= 0, got {config.optimizer[field]}.')
  _require(int(config.keep_checkpoints) >= 1, 'keep_checkpoints',
           f'must be >= 1 (the latest checkpoint is what a resumed run needs), got '
           f'{config.keep_checkpoints}.')
  try:
    summary_writers.check_config(config)  # e.g. W&B on but not installed: say so before any data
  except summary_writers.LoggingConfigError as e:
    raise ConfigError(str(e)) from None
