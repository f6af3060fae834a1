"""The schedule of each arm of the equal-budget study, shared by its protocols' config files.

  one_cycle      Smith's 1cycle: 3 phases, peak/10 -> peak -> peak/10 -> peak/1e4, 45 % up,
                 cyclical momentum 0.95 -> 0.85 -> 0.95 (`schedules.one_cycle`)
  linear         linear decay from the peak to zero, no warm-up (airbench94_muon)
  wsd            warm-up 5 %, stable, (1 - sqrt) cooldown over the last 20 %
  cosine         warm-up 5 %, cosine to zero
  schedule_free  schedule-free SGD (b1 0.9), warm-up 5 % then constant, evaluated at the
                 averaged point x (BN statistics recalibrated there first)

Every arm but 1cycle keeps the config's constant momentum (0.9).
"""

import ml_collections

from configs import common

SCHEDULES = ('one_cycle', 'linear', 'wsd', 'cosine', 'schedule_free')
WARMUP = 0.05     # fraction of the run warming up (wsd, cosine, schedule_free)
COOLDOWN = 0.2    # WSD's cooldown fraction


def set_arm(c: ml_collections.ConfigDict, name: str, peak: float) -> ml_collections.ConfigDict:
  """Sets `c`'s schedule (and for schedule-free its optimizer) to arm `name` over c.num_steps."""
  warmup = int(round(WARMUP * c.num_steps))
  if name == 'one_cycle':
    common.set_schedule(c, 'one_cycle', max_lr=peak)
    c.momentum_schedule.name = 'one_cycle'
    c.momentum_schedule.max_momentum, c.momentum_schedule.min_momentum = 0.95, 0.85
  elif name == 'linear':
    common.set_schedule(c, 'linear_decay', max_lr=peak)
  elif name == 'wsd':
    common.set_schedule(c, 'wsd', max_lr=peak, warmup_steps=warmup, decay_fraction=COOLDOWN,
                        cooldown='1-sqrt')
  elif name == 'cosine':
    common.set_schedule(c, 'warmup_cosine', max_lr=peak, warmup_steps=warmup)
  elif name == 'schedule_free':
    c.optimizer.name = 'schedule_free_sgd'
    common.set_schedule(c, 'warmup_constant', max_lr=peak, warmup_steps=warmup)
  else:
    raise ValueError(f'unknown arm schedule {name!r}; valid: {", ".join(SCHEDULES)}')
  return c
