"""A config as the programs receive it: resolved once, before dispatch, and checked.

`resolve(config)` is called by `superconv.main` and `experiments.run` (through
`superconv.programs`) and nowhere else; no program rewrites its config afterwards:

  1. a training run named an LR range test result (`lr_range_result`): its suggestion sets the
     schedule's LR bounds (`apply_suggestion`; the result is read as plain JSON);
  2. a range test (`mode='lr_range'`): the run becomes the sweep of `config.lr_range`
     (`range_form`);
  3. `validate`: every field a run cannot use, and the cross-field rules (devices x batch, BN
     groups x per-device batch, schedule length x num_steps, streamed-set limits), as one-line
     `ConfigError`s naming the field. Cheap: no data is read and nothing is compiled.
"""

from __future__ import annotations

import json

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from superconv import models
from superconv.models import layers
from superconv import optim
from superconv import storage
from superconv import summary_writers
from superconv.data import sources

MODES = ('train', 'lr_range', 'eval')
EVAL_SPLITS = ('validation', 'test')
# What a range test's suggestion is read from (`lr_range.sweep.run`).
READINGS = ('accuracy', 'loss')
# How a range test sweeps a cyclical momentum (`range_form`).
SWEPT_MOMENTA = ('start', 'cyclical')
SOURCES = ('tfds', 'files', 'fake')




class ConfigError(ValueError):
  """A config field holds a value superconv cannot run."""


def _require(ok: bool, field: str, message: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field}: {message}')


def resolve(config: ml_collections.ConfigDict, *,
            num_devices: int | None = None) -> ml_collections.ConfigDict:
  """The config a program runs: suggestion applied or range-test form set, then validated.

  Returns a resolved copy (references followed); `config` itself is not changed.
  """
  _require(config.mode in MODES, 'mode', f'{config.mode!r} is not one of {MODES}.')
  if config.mode == 'lr_range':
    c = range_form(config)
  else:
    c = apply_suggestion(config.copy_and_resolve_references())
  validate(c, num_devices=num_devices)
  return c


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
  _require(int(config.cpu_steps_per_dispatch) >= 1, 'cpu_steps_per_dispatch',
           f'must be >= 1, got {config.cpu_steps_per_dispatch}.')
  _require(int(config.cpu_unroll_min_steps) >= 0, 'cpu_unroll_min_steps',
           f'must be >= 0, got {config.cpu_unroll_min_steps}.')

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
    # The dry build checks the name; the class count is the dataset's (an unknown dataset is
    # reported below, under data.name).
    classes = sources.SPECS[config.data.name].num_classes if config.data.name in sources.SPECS \
        else 1
    models.create_model(config.model.name, num_classes=classes)
  except ValueError as e:
    raise ConfigError(f'config.model.name: {e}') from None
  _require(config.model.dtype in layers.DTYPES, 'model.dtype',
           f'{config.model.dtype!r} not in {layers.DTYPES}.')
  _require(0.0 <= config.model.bn_momentum < 1.0, 'model.bn_momentum',
           f'the moving-average fraction must be in [0, 1), got {config.model.bn_momentum}.')
  _require(0.0 <= config.model.dropout_rate < 1.0, 'model.dropout_rate',
           f'must be in [0, 1), got {config.model.dropout_rate}.')

  d = config.data
  _require(d.name in sources.SPECS, 'data.name',
           f'unknown dataset {d.name!r}; known: {", ".join(sources.SPECS)}.')
  _require(d.source in SOURCES, 'data.source', f'{d.source!r} not in {SOURCES}.')
  _require(d.source != 'files' or bool(d.path), 'data.path',
           "is empty but data.source='files' needs a file or folder.")
  _require(d.mean in ('pixel', 'channel', 'none'), 'data.mean',
           f"{d.mean!r} not in ('pixel', 'channel', 'none').")
  _require(d.crop_padding >= 0, 'data.crop_padding', f'must be >= 0, got {d.crop_padding}.')
  _require(d.eval_batch_size > 0, 'data.eval_batch_size', 'must be positive.')
  _require(d.train_subset >= 0, 'data.train_subset', f'must be >= 0, got {d.train_subset}.')
  spec = sources.SPECS[d.name]
  train_size = spec.train_size if d.source != 'fake' and spec.train_size else d.fake_num_train
  if d.train_subset:
    _require(d.train_subset <= train_size, 'data.train_subset',
             f'{d.train_subset} is larger than the {train_size} training examples of '
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
  try:  # the optimizer factory owns its fields' ranges
    optim.check_optimizer(config.optimizer)
  except ValueError as e:
    raise ConfigError(f'config.{e}') from None
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
  _require(int(config.keep_checkpoints) >= 1, 'keep_checkpoints',
           f'must be >= 1 (the latest checkpoint is what a resumed run needs), got '
           f'{config.keep_checkpoints}.')
  try:
    summary_writers.check_config(config)  # e.g. W&B on but not installed: say so before any data
  except summary_writers.LoggingConfigError as e:
    raise ConfigError(str(e)) from None


def range_form(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` set up as a range test: mode, the 'lr_range' schedule, num_steps.

  So `--config=configs/resnet56.py --config.mode=lr_range` sweeps the training run's model and
  optimizer over config.lr_range. Checks the lr_range fields the sweep and its reading use.
  """
  c = config.copy_and_resolve_references()
  # The run the sweep configures: this config's own, unless it is a range-test file.
  if not c.lr_range.run_steps and config.schedule.name != 'lr_range':
    c.lr_range.run_steps = int(config.num_steps)
  c.mode = 'lr_range'
  optim.sweep_schedule(c)
  c.num_steps = int(c.lr_range.num_steps)
  r = c.lr_range
  # A cyclical momentum is swept at the value it starts at ('start': the run's LR rises from
  # there, so that is the effective step lr / (1 - m) it first takes), or falling linearly from
  # max to min over the sweep as the LR rises ('cyclical': the (lr, m) pairs of the cycle's
  # first half, the combination Smith 2018 §5 recommends with the test). `apply_suggestion`
  # checks the whole cycle against the momentum at the reading.
  m = c.momentum_schedule
  if m.name != 'constant' and r.momentum == 'cyclical':
    m.name, m.step_size = 'cyclical', int(r.num_steps)
  elif m.name != 'constant':
    m.name, m.value = 'constant', float(m.max_momentum)
  streamed = sources.streamed(c.data.name)
  checks = (
      (r.eval_split in EVAL_SPLITS, 'eval_split', f'{r.eval_split!r} is not one of {EVAL_SPLITS}'),
      (int(r.eval_examples) > 0 or (r.eval_split == 'test' and int(r.eval_examples) == 0),
       'eval_examples', f'must be > 0 for a validation split (>= 0 for the test split), got '
       f'{r.eval_examples}'),
      (int(r.repeats) >= 1, 'repeats', f'must be >= 1, got {r.repeats}'),
      (not streamed or (r.eval_split == 'test' and not r.eval_examples and r.repeats == 1),
       'eval_split', f'{c.data.name} is streamed: a range test reads its whole test split once '
       "(eval_split='test', eval_examples=0, repeats=1)"),
      (int(r.eval_every_steps) > 0, 'eval_every_steps',
       f'must be positive (the test reads the held-out accuracy), got {r.eval_every_steps}'),
      (0.0 <= r.smoothing < 1.0, 'smoothing', f'must be in [0, 1), got {r.smoothing}'),
      (r.diverge_factor == 0 or r.diverge_factor > 1, 'diverge_factor',
       f'must be 0 (never stop) or > 1, got {r.diverge_factor}'),
      (r.min_lr_div_clr >= 1, 'min_lr_div_clr', f'must be >= 1, got {r.min_lr_div_clr}'),
      (r.min_lr_div_1cycle >= 1, 'min_lr_div_1cycle', f'must be >= 1, got {r.min_lr_div_1cycle}'),
      (0.0 <= r.min_rise < 1.0, 'min_rise', f'must be in [0, 1), got {r.min_rise}'),
      (r.reading in READINGS, 'reading', f'{r.reading!r} is not one of {READINGS}'),
      (r.momentum in SWEPT_MOMENTA, 'momentum', f'{r.momentum!r} is not one of {SWEPT_MOMENTA}'),
  )
  for ok, field, message in checks:
    if not ok:
      raise ConfigError(f'config.lr_range.{field}: {message}.')
  return c


# The settings a range test shares with the run it feeds: a suggestion read at other settings
# is not a reading for this run (the momentum is compared at its start, see `range_form`).
MATCHED_FIELDS = ('optimizer.name', 'optimizer.nesterov', 'optimizer.momentum_form',
                  'optimizer.weight_decay', 'optimizer.decoupled_weight_decay', 'batch_size',
                  'model.name', 'model.virtual_batch_size', 'model.dtype', 'data.name',
                  'data.train_subset')
# How a fed run's LR bounds follow the tested effective step (`apply_suggestion`).
EFFECTIVE_STEP_RULES = ('match', 'cap')


def _get(tree: dict, dotted: str):
  for part in dotted.split('.'):
    tree = tree.get(part) if isinstance(tree, dict) else None
  return tree


def _start_momentum(m) -> float:
  return float(m['value'] if m['name'] == 'constant' else m['max_momentum'])


def setting_differences(tested: dict, run: ml_collections.ConfigDict) -> list[str]:
  """What differs between a range test's resolved config (`tested`, as saved in lr_range.json)
  and the run it would feed: `MATCHED_FIELDS` and the momentum the run starts at."""
  out = []
  mine = run.to_dict()
  for field in MATCHED_FIELDS:
    a, b = _get(tested, field), _get(mine, field)
    if a is not None and a != b:
      out.append(f'{field}: tested {a!r}, this run {b!r}')
  if 'momentum_schedule' in tested:
    a, b = _start_momentum(tested['momentum_schedule']), _start_momentum(mine['momentum_schedule'])
    if abs(a - b) > 1e-9:
      out.append(f'momentum: tested {a:g}, this run starts at {b:g}')
  return out


def run_identity(config: ml_collections.ConfigDict) -> dict:
  """What a range test records of the training it swept (`lr_range.find`'s `identity`), for the
  run `config` would train: model class and parameter count (from shapes alone, nothing is
  computed), input shape, number of classes, batch size, optimizer, starting momentum."""
  from superconv import step as step_lib  # pylint: disable=g-import-not-at-top  (heavy)
  d = config.data
  n = sources.num_classes(d.name)
  spec = sources.SPECS[d.name]
  shape = tuple(d.get('fake_image_shape', None) or spec.fake_shape) if d.source == 'fake' else (
      tuple(spec.image_shape))
  model = step_lib.build_model(config, n)
  try:
    params, _ = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, *shape), jnp.float32)))
    count = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
  except Exception:  # pylint: disable=broad-except  (a model that cannot be traced abstractly)
    count = None
  return {'model': model.name, 'params': count, 'input_shape': list(shape), 'num_classes': n,
          'batch_size': int(config.batch_size), 'optimizer': {'name': config.optimizer.name},
          'momentum': _start_momentum(config.momentum_schedule.to_dict())}


def identity_differences(tested: dict, run: ml_collections.ConfigDict) -> list[str]:
  """What differs between a range test's recorded identity (saved from Python) and the run
  `run` would train: model class, parameter count, input shape, classes, batch size, momentum
  (where the test recorded them; an optimizer given as a factory records no momentum)."""
  mine = run_identity(run)
  out = []
  for field in ('model', 'params', 'input_shape', 'num_classes', 'batch_size'):
    a, b = tested.get(field), mine[field]
    if a is not None and b is not None and a != b:
      out.append(f'{field}: tested {a!r}, this run {b!r}')
  m = tested.get('momentum')
  if isinstance(m, list):  # swept from m[0] down as the LR rose: compare where it started
    m = m[0]
  if m is not None and abs(float(m) - mine['momentum']) > 1e-6:  # recorded in float32
    out.append(f'momentum: tested {float(m):g}, this run starts at {mine["momentum"]:g}')
  name = (tested.get('optimizer') or {}).get('name')
  if name is not None and name != mine['optimizer']['name']:
    out.append(f'optimizer: tested {name!r}, this run {mine["optimizer"]["name"]!r}')
  return out


def _recorded_momentum(result: dict, lr: float) -> float | None:
  """The momentum a Python-API range test (lr_range.json) ran at when its LR reached `lr`: the
  recorded constant, or its linear sweep `momentum_swept` [m0, m1]; None if not recorded."""
  settings = result['settings']
  swept = settings.get('momentum_swept')
  if swept:
    n = int(settings.get('num_steps') or len(result.get('lr', [])) or 1)
    reached = np.flatnonzero(np.asarray(result.get('lr', []), np.float64) >= lr * (1 - 1e-6))
    k = int(reached[0]) if reached.size else n
    return float(swept[0] + (swept[1] - swept[0]) * min(k, n) / n)
  m = settings['identity'].get('momentum')
  return None if m is None or isinstance(m, (list, dict)) else float(m)


def tested_momentum(tested: dict, lr: float) -> float:
  """The momentum a range test (its resolved config, as saved in lr_range.json) swept at LR `lr`:
  its constant value, or for a cyclical sweep (`lr_range.momentum='cyclical'`) the value at
  the first update whose LR reached `lr`."""
  m = tested['momentum_schedule']
  if m['name'] == 'constant':
    return float(m['value'])
  lr_fn, m_fn = optim.build_schedules(ml_collections.ConfigDict(tested))
  lrs = np.asarray(jax.vmap(lr_fn)(jnp.arange(int(tested['num_steps']))))
  # The reading is one of the swept LRs (float32, then saved as text): allow for its rounding.
  reached = np.flatnonzero(lrs >= lr * (1 - 1e-6))
  return float(m_fn(int(reached[0]) if reached.size else lrs.size - 1))


def max_effective_step(config: ml_collections.ConfigDict) -> float:
  """max over the run's updates t of lr(t) / (1 - momentum(t)), SGD's steady-state step size."""
  lr_fn, m_fn = optim.build_schedules(config)
  t = jnp.arange(int(config.num_steps))
  return float(jnp.max(jax.vmap(lr_fn)(t) / (1.0 - jax.vmap(m_fn)(t))))


def apply_suggestion(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with its LR bounds from the range test in `config.lr_range_result` (if set).

  The schedule's registry entry says which fields (`optim.apply_lr_bounds`): 'triangular' (CLR):
  max_lr = suggested max, base_lr = max / lr_range.min_lr_div_clr (as saved in the result).
  'one_cycle': max_lr and div_factor = max / the 1cycle min, so the run starts at the suggested
  min. 'caffe_one_cycle': max_lr and base_lr = the 1cycle min.

  The test must have run at this run's settings (`setting_differences`; a ConfigError names
  each difference unless `lr_range.accept_mismatch`). For SGD, the suggestion is then held to
  what was tested: the sweep read max_lr at momentum m_tested, so the step it found
  safe is E = max_lr / (1 - m_tested) (a cyclical sweep: m_tested is its momentum where the LR
  was max_lr, `tested_momentum`). `lr_range.effective_step='cap'` (the default) scales every
  LR bound by min(1, E / max_t lr(t) / (1 - m(t))): the run never takes a larger effective step
  than the test did, and a run at the tested momentum gets the reading as it is. `'match'`
  scales by that factor up or down, so the run's largest step is E: a 1cycle whose momentum
  falls to m_min at the LR peak gets max_lr * (1 - m_min) / (1 - m_tested), e.g. 4x for
  0.95 -> 0.8. Measured (`research/range_trust/run_cpu.sh`): 'match' lands on the edge of
  stability (LeNet / Fashion-MNIST: the 4x peak diverged in runs) or far past the best peak when
  the reading is a flat curve's top (ResNet-20 on a CIFAR-10 subset: 3x, 25 points below the
  grid's best), so the default is the rule that never extrapolates past the test.

  Returns a copy; `config` itself is not changed. An empty `lr_range_result` returns `config`.

  Raises:
    ConfigError: unreadable file, unreliable suggestion, settings that differ, or a schedule
      without LR bounds to set.
  """
  path = config.get('lr_range_result', '')
  if not path:
    return config
  try:
    result = json.loads(storage.path(path).read_text())  # a local path or gs://...
    s = result['suggestion']
    max_lr, clr_min, one_min = (float(s[k]) for k in ('max_lr', 'min_lr_clr', 'min_lr_1cycle'))
  except (OSError, KeyError, TypeError, ValueError) as e:
    raise ConfigError(
        f'config.lr_range_result: cannot read a suggestion from {path!r} ({e}).') from None
  c = config.copy_and_resolve_references()
  tested = result.get('settings', {}).get('config')
  if tested:
    differences = setting_differences(tested, c)
    if differences and not c.lr_range.accept_mismatch:
      raise ConfigError(
          f'config.lr_range_result: the range test in {path!r} ran with other settings than '
          f'this run ({"; ".join(differences)}). Rerun the test with this run\'s settings, or '
          'pass --config.lr_range.accept_mismatch=True to use it anyway.')
    if differences:
      logging.warning('Using the range test in %s although its settings differ: %s.', path,
                      '; '.join(differences))
  else:
    # A result saved from Python records what it swept (`lr_range.find`'s identity), not a
    # config: compared field by field with what this run would train.
    identity = result.get('settings', {}).get('identity')
    differences = (identity_differences(identity, c) if identity else
                   ['it records neither its config nor what it swept (model, data, optimizer)'])
    if differences and not c.lr_range.accept_mismatch:
      raise ConfigError(
          f'config.lr_range_result: the range test in {path!r} is not a test of this run '
          f'({"; ".join(differences)}). Rerun the test with this run\'s settings, or pass '
          '--config.lr_range.accept_mismatch=True to use it anyway.')
    if differences:
      logging.warning('Using the range test in %s although its settings differ: %s.', path,
                      '; '.join(differences))

  if not s.get('reliable', True):
    raise ConfigError(
        f'config.lr_range_result: the range test in {path!r} gave no reliable reading '
        f"({s.get('explanation', '')}); set the LRs by hand or rerun the test.")

  def set_bounds(scale: float) -> dict:
    try:
      return optim.apply_lr_bounds(c.schedule, max_lr=max_lr * scale, min_lr_clr=clr_min * scale,
                                   min_lr_1cycle=one_min * scale)
    except ValueError as e:
      raise ConfigError(f'config.lr_range_result: {e}') from None

  set_fields = set_bounds(1.0)
  rule = c.lr_range.effective_step
  if rule not in EFFECTIVE_STEP_RULES:
    raise ConfigError(f'config.lr_range.effective_step: {rule!r} is not one of '
                      f'{EFFECTIVE_STEP_RULES}.')
  m_tested = None
  if tested:
    m_tested = tested_momentum(tested, max_lr)
  elif result.get('settings', {}).get('identity'):  # saved from Python: its recorded momentum
    m_tested = _recorded_momentum(result, max_lr)
  if m_tested is not None and c.optimizer.name == 'sgd':
    # Every bound scales lr(t) by the same factor, so the largest effective step scales with it.
    scale = max_lr / (1.0 - m_tested) / max_effective_step(c)
    if (rule == 'match' and abs(scale - 1.0) > 1e-6) or (rule == 'cap' and scale < 1 - 1e-6):
      set_fields = set_bounds(scale)
      logging.warning('LR bounds scaled by %.3f so that the run\'s largest effective step '
                      'lr/(1-m) is the tested max_lr/(1-m) (lr_range.effective_step=%r).',
                      scale, rule)
  logging.info('LR bounds from %s: %s (%s).', path,
               ', '.join(f'schedule.{k}={v:g}' for k, v in set_fields.items()),
               s.get('method', ''))
  return c
