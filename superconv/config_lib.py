"""Helpers shared by the config files: argument strings, the `smoke` and `tiny` variants, locking.

A config file's `get_config(arg)` receives what follows the colon in `--config=file.py:ARG`.
ARG is a comma-separated list of words and `key=value` pairs, e.g. `smoke`, `stepsize=3000,smoke`.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re

import ml_collections

from superconv import schedule_registry

# The tag that marks a field of configs/default.py as operational: it changes how a run is
# watched, saved or executed (logging, progress, evaluation and checkpoint cadence, caches,
# threads, where to stop), never what is trained, so a rerun on an existing workdir may change
# it (superconv.workdir). A tagged section (`c.logging = ...  # [op]`) covers all its fields.
OPERATIONAL_TAG = '[op]'
_FIELD_LINE = re.compile(r'^\s*c\.([\w.]+)\s*=.*#\s*' + re.escape(OPERATIONAL_TAG))


@functools.cache
def operational_fields() -> frozenset[str]:
  """The dotted fields tagged `[op]` in configs/default.py (its comments are the one list),
  e.g. 'log_every_steps' and 'logging', never 'seed' (tests/test_reliability.py)."""
  origin = importlib.util.find_spec('configs.default').origin
  with open(origin) as f:
    return frozenset(m.group(1) for m in map(_FIELD_LINE.match, f) if m)


def is_operational(field: str) -> bool:
  """True if the dotted `field` is tagged `[op]`, or lies in a section that is."""
  parts = field.split('.')
  return any('.'.join(parts[:i]) in operational_fields() for i in range(1, len(parts) + 1))

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


# The two shrunk variants: `smoke` is the newcomer's first run (it must visibly learn), `tiny` the
# shape the test suite drives (8 updates: every reliability, resume and multi-host test counts
# on it, and it compiles and runs in seconds).
SMOKE_UPDATES, TINY_UPDATES = 32, 8
# The smoke model (ResNet-8 at batch 32 on the generated set) measured on the 2-core CPU over
# 32 updates of the Fig. 1a CLR shape: peak 3.0 or 0.3 -> it diverges or ends at chance; peak
# 0.06 -> 0.70-0.80 final eval accuracy (seeds 0-2). So the smoke caps the peak LR there and
# scales every LR of the schedule by the same factor, keeping the shape.
SMOKE_MAX_LR = 0.06


def is_shrunk(args: dict) -> bool:
  """True for the `smoke` and `tiny` variants (generated data, a few updates)."""
  return bool(args.get('smoke') or args.get('tiny'))


def _scaled(value: int, factor: float, updates: int) -> int:
  """A length in updates shrunk by `factor`, kept inside the shrunk run (0, 'off', stays 0)."""
  return 0 if not value else max(1, min(updates - 1, round(value * factor)))


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
  # The model registry owns its families; imported here, not at the top, because it imports
  # flax and jax, which the full-size configs (and flag errors) need not load.
  from superconv import models  # pylint: disable=g-import-not-at-top
  c.model.name = models.smallest(c.model.name)
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
  sweep = c.mode == 'lr_range'
  kind = schedule_registry.SCHEDULES['lr_range' if sweep else c.schedule.name]
  s = c[kind.section]
  for field in kind.durations:  # the registry's lengths in updates, all by the same factor
    v = s[field]
    s[field] = (tuple(_scaled(b, factor, updates) for b in v) if isinstance(v, (tuple, list))
                else _scaled(v, factor, updates))
  for field, fraction in kind.smoke_fractions.items():
    s[field] = max(1, int(updates * fraction))
  if c.momentum_schedule.step_size:
    c.momentum_schedule.step_size = max(1, round(c.momentum_schedule.step_size * factor))
  c.lr_range.num_steps = updates
  if c.lr_range.eval_examples:  # a validation split (or test draw) the generated set can hold
    c.lr_range.eval_examples = min(int(c.lr_range.eval_examples), 40)
  length = kind.length(s, updates)
  if length is not None:  # a schedule whose own fields fix its length (CLR) sets the run's
    c.num_steps = length
  if max_lr is not None and s[kind.peak_field] > max_lr:
    scale = max_lr / s[kind.peak_field]
    for field in kind.lr_fields:
      s[field] = s[field] * scale
  c.lr_range.eval_every_steps = half
  if c.mode == 'lr_range':
    c.num_steps = c.lr_range.num_steps
  return c


def finalize(c: ml_collections.ConfigDict, arg: str | None = '') -> ml_collections.ConfigDict:
  """Applies `smoke` or `tiny` if asked and locks the config (a mistyped override then fails)."""
  args = parse_arg(arg)
  if is_shrunk(args) and args.get('data'):
    raise ValueError(
        f"data={args['data']} with {'smoke' if args.get('smoke') else 'tiny'}: the shrunk runs "
        'train on generated images, so the data would be ignored; drop smoke/tiny to train on '
        'it.')
  if args.get('smoke'):
    c = apply_smoke(c, SMOKE_UPDATES, batch_size=32, max_lr=SMOKE_MAX_LR)
  elif args.get('tiny'):
    c = apply_smoke(c)
  # A section replaced after an earlier lock (`c.schedule = schedule_config(...)` on the locked
  # default) is a new, unlocked dict, and ConfigDict.lock() stops at an already locked parent:
  # unlock first so that every level is locked (a foreign schedule field must fail).
  c.unlock().lock()
  return c
