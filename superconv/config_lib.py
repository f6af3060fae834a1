"""Helpers shared by the config files: argument strings, the `smoke` and `tiny` variants, locking.

A config file's `get_config(arg)` receives what follows the colon in `--config=file.py:ARG`.
ARG is a comma-separated list of words and `key=value` pairs, e.g. `smoke`, `stepsize=3000,smoke`.
"""

from __future__ import annotations

import ast

import ml_collections

# Smallest member of each model family, used by the `smoke` variant.
_SMOKE_MODELS = {
    'resnet': 'resnet8',
    'resnet_a': 'resnet8_a',
    'bottleneck_resnet': 'bottleneck_resnet11',
    'resnext': 'resnext11',
    'wide_resnet': 'wide_resnet8',
    'densenet': 'densenet10',
    'lenet': 'lenet',
    'resnet50': 'resnet_imagenet_tiny',
    'inception_resnet_v2': 'inception_resnet_tiny',
}


def parse_arg(arg: str | None) -> dict:
  """'smoke,stepsize=3000' -> {'smoke': True, 'stepsize': 3000}. Values are Python literals."""
  out = {}
  for part in filter(None, (p.strip() for p in (arg or '').split(','))):
    if '=' in part:
      key, value = part.split('=', 1)
      try:
        out[key.strip()] = ast.literal_eval(value.strip())
      except (ValueError, SyntaxError):
        out[key.strip()] = value.strip()
    else:
      out[part] = True
  return out


def smoke_model(name: str) -> str:
  """The smallest model of `name`'s family (fast to compile and run on a 2-core CPU)."""
  import re  # pylint: disable=g-import-not-at-top
  if name.startswith('inception_resnet'):
    return _SMOKE_MODELS['inception_resnet_v2']
  if name.startswith('resnet50') or name.startswith('resnet_imagenet'):
    return _SMOKE_MODELS['resnet50']
  family = re.sub(r'\d+', '', name).rstrip('_') or name
  family = family.replace('__', '_')
  return _SMOKE_MODELS.get(family, name)


# The two shrunk variants: `smoke` is the newcomer's first run (it must visibly learn), `tiny` the
# shape the test suite drives (8 updates: every reliability, resume and multi-host test counts
# on it, and it compiles and runs in seconds).
SMOKE_UPDATES, TINY_UPDATES = 32, 8
# The smoke model (ResNet-8 at batch 32 on the generated set) measured on the 2-core CPU over
# 32 updates of the Fig. 1a CLR shape: peak 3.0 or 0.3 -> it diverges or ends at chance; peak
# 0.06 -> 0.70-0.80 final eval accuracy (seeds 0-2). So the smoke caps the peak LR there and
# scales every LR of the schedule by the same factor, keeping the shape.
SMOKE_MAX_LR = 0.06
_PEAK_AT_MAX_LR = ('triangular', 'one_cycle', 'caffe_one_cycle', 'warmup_cosine')


def is_shrunk(args: dict) -> bool:
  """True for the `smoke` and `tiny` variants (generated data, a few updates)."""
  return bool(args.get('smoke') or args.get('tiny'))


def _peak_lr(c: ml_collections.ConfigDict) -> float:
  if c.schedule.name == 'lr_range' or c.mode == 'lr_range':
    return float(c.lr_range.max_lr)
  if c.schedule.name in _PEAK_AT_MAX_LR:
    return float(c.schedule.max_lr)
  return float(c.schedule.base_lr)


def apply_smoke(c: ml_collections.ConfigDict, updates: int = TINY_UPDATES, *,
                batch_size: int = 16, max_lr: float | None = None) -> ml_collections.ConfigDict:
  """Shrinks model, data and steps so a run ends in well under a minute on 2 CPU cores.

  The schedule keeps its shape: every length in updates is scaled by the same factor
  `updates / num_steps`, so a shrunk run walks through the same phases as the real one. With
  `max_lr`, a peak LR above it is brought down to it and every LR of the schedule (base and
  max, or the range test's bounds) is multiplied by the same factor.

  `tiny` = `apply_smoke(c)`: 8 updates at batch 16 with the paper's LRs (the test suite's shape).
  `smoke` = `apply_smoke(c, 32, batch_size=32, max_lr=0.06)`: enough updates, at an LR the
  small model survives, that the run learns (ResNet-56's smoke: CLR 0.002 -> 0.06 -> 0.002
  over 32 updates, 0.70-0.80 eval accuracy on the generated set, chance 0.10).
  """
  factor = updates / max(c.num_steps, 1)
  half, quarter = max(1, updates // 2), max(1, updates // 4)
  c.model.name = smoke_model(c.model.name)
  c.model.virtual_batch_size = 0
  c.data.source = 'fake'
  if c.data.name == 'imagenet2012':  # still streamed, from generated images, at 32 x 32
    c.data.image_size = 32
    c.data.num_threads = 2
  c.data.train_subset = 0
  c.data.eval_batch_size = 64
  c.data.fake_num_train = 256
  c.data.fake_num_test = 100
  c.batch_size = batch_size
  c.num_steps = updates
  c.eval_every_steps = half
  c.log_every_steps = quarter
  c.checkpoint_every_steps = half
  c.steps_per_dispatch = 2
  s = c.schedule
  s.step_size = max(1, round(s.step_size * factor))
  s.warmup_steps = min(updates - 1, round(s.warmup_steps * factor))
  s.boundaries = tuple(max(1, min(updates - 1, round(b * factor))) for b in s.boundaries)
  if c.momentum_schedule.step_size:
    c.momentum_schedule.step_size = max(1, round(c.momentum_schedule.step_size * factor))
  if s.name == 'triangular':
    s.step_size = half // max(1, s.num_cycles) or 1
    c.num_steps = 2 * s.step_size * s.num_cycles
  if s.name == 'caffe_one_cycle':
    s.step_size = max(1, 3 * updates // 8)
  if max_lr is not None and _peak_lr(c) > max_lr:
    scale = max_lr / _peak_lr(c)
    if c.schedule.name == 'lr_range' or c.mode == 'lr_range':
      c.lr_range.min_lr, c.lr_range.max_lr = c.lr_range.min_lr * scale, c.lr_range.max_lr * scale
    else:
      s.base_lr, s.max_lr = s.base_lr * scale, s.max_lr * scale
  c.lr_range.num_steps = updates
  c.lr_range.eval_every_steps = half
  if c.mode == 'lr_range':
    c.num_steps = c.lr_range.num_steps
  return c


def finalize(c: ml_collections.ConfigDict, arg: str | None = '') -> ml_collections.ConfigDict:
  """Applies `smoke` or `tiny` if asked and locks the config (a mistyped override then fails)."""
  args = parse_arg(arg)
  if args.get('smoke'):
    c = apply_smoke(c, SMOKE_UPDATES, batch_size=32, max_lr=SMOKE_MAX_LR)
  elif args.get('tiny'):
    c = apply_smoke(c)
  c.lock()
  return c
