"""Helpers shared by the config files: argument strings, the `smoke` variant, locking.

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


def apply_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks model, data and steps so a run ends in well under a minute on 2 CPU cores.

  The schedule keeps its shape: every length in updates is scaled by the same factor, so a
  smoke run walks through the same phases as the real one.
  """
  factor = 8 / max(c.num_steps, 1)
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
  c.batch_size = 16
  c.num_steps = 8
  c.eval_every_steps = 4
  c.log_every_steps = 2
  c.checkpoint_every_steps = 4
  c.steps_per_dispatch = 2
  s = c.schedule
  s.step_size = max(1, round(s.step_size * factor))
  s.boundaries = tuple(max(1, min(7, round(b * factor))) for b in s.boundaries)
  if c.momentum_schedule.step_size:
    c.momentum_schedule.step_size = max(1, round(c.momentum_schedule.step_size * factor))
  if s.name == 'triangular':
    s.step_size = 4 // max(1, s.num_cycles) or 1
    c.num_steps = 2 * s.step_size * s.num_cycles
  if s.name == 'caffe_one_cycle':
    s.step_size = 3
  c.lr_range.num_steps = 8
  c.lr_range.eval_every_steps = 4
  if c.mode == 'lr_range':
    c.num_steps = c.lr_range.num_steps
  return c


def finalize(c: ml_collections.ConfigDict, arg: str | None = '') -> ml_collections.ConfigDict:
  """Applies `smoke` if asked and locks the config (a mistyped override then fails)."""
  if parse_arg(arg).get('smoke'):
    c = apply_smoke(c)
  c.lock()
  return c
