"""The LR schedule registry: every fact about each schedule's config, in one entry per schedule.

`config.schedule` holds `name` plus the chosen schedule's own arguments and nothing else (so a
foreign field, e.g. `--config.schedule.gamma=0.5` on a 1cycle config, is an error on a locked
config). Each `ScheduleKind` in `SCHEDULES` says:

  * `fields`: the config fields the schedule takes, with default and a one-line comment (what
    `schedule_config(name)` fills in; this replaces a flat union of all schedules' fields);
  * `factory` / `factory_args` / `total_steps_arg`: how `optim.build_schedules` calls its
    factory in `superconv.schedules` (`getattr(schedules, factory)(**kwargs)`);
  * `length(args, num_steps)`: updates the schedule is designed for, or None;
  * `check(args, num_steps)`: the cross-field rules against num_steps (`optim.check_schedule`);
  * `lr_fields` / `peak_field`: the fields that are LRs and the one that holds the peak (the smoke
    variant's LR cap scales all of them by one factor);
  * `bounds(max_lr, min_lr_clr, min_lr_1cycle)`: what a range-test suggestion sets, or None;
  * `durations` / `smoke_fractions`: fields that are lengths in updates (the smoke variant
    scales them by one factor) and those it sets to a fixed fraction of the shrunk run instead;
  * `describe(args)`: the short text of the results tables (`experiments/make_tables`).

This module is plain Python (no jax): configs and `config_lib` import it at flag-parsing time.
`superconv.optim` adds the jax side (it calls the factories) and re-exports the helpers.

Adding a schedule = its factory in `superconv/schedules.py` plus one entry here.
"""

from __future__ import annotations

import dataclasses
import fractions
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

__all__ = ['MOMENTUM_FROM_LR', 'SCHEDULES', 'ScheduleKind', 'apply_lr_bounds', 'args_of',
           'momentum_lr_args', 'schedule_config', 'sweep_schedule']


def _none(args: Mapping[str, Any], num_steps: int) -> None:
  del args, num_steps


def _g(x) -> str:
  return f'{x:g}'


@dataclasses.dataclass(frozen=True)
class ScheduleKind:
  """One LR schedule's config facts (see the module docstring)."""
  factory: str
  fields: Mapping[str, tuple[Any, str]]
  factory_args: Mapping[str, str]           # factory keyword -> config field
  describe: Callable[[Mapping[str, Any]], str]
  total_steps_arg: str | None = None        # the factory keyword that receives num_steps
  section: str = 'schedule'                 # the config section its arguments are read from
  length: Callable[[Mapping[str, Any], int], int | None] = _none
  check: Callable[[Mapping[str, Any], int], None] = _none
  lr_fields: tuple[str, ...] = ()
  peak_field: str = 'max_lr'
  bounds: Callable[[float, float, float], dict[str, float]] | None = None
  durations: tuple[str, ...] = ()
  smoke_fractions: Mapping[str, fractions.Fraction] = dataclasses.field(default_factory=dict)

  def defaults(self) -> dict[str, Any]:
    return {k: v for k, (v, _) in self.fields.items()}


# --- Length and cross-field rules ----------------------------------------------------------


def _clr_length(s, num_steps):
  del num_steps
  return 2 * s['step_size'] * s['num_cycles']


def _clr_check(s, n):
  cycles = s['num_cycles']
  if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
    raise ValueError(f'schedule.num_cycles must be a positive integer, got {cycles!r}')
  length = _clr_length(s, n)
  if length != n:
    hint = f'; e.g. schedule.step_size={n // (2 * cycles)}' if n % (2 * cycles) == 0 else ''
    raise ValueError(
        f"schedule.step_size={s['step_size']} with schedule.num_cycles={cycles} makes a "
        f'{length}-update CLR schedule (2 * step_size * num_cycles) but num_steps={n}: set '
        f'num_steps={length} or change the step size{hint}')


def _run_length(s, num_steps):
  del s
  return int(num_steps)


def _caffe_check(s, n):
  ss = s['step_size']
  if 2 * ss > n:
    raise ValueError(
        f'schedule.step_size={ss} makes the Caffe 1cycle up-and-down {2 * ss} updates long '
        f'(2 * step_size) but num_steps={n}: need 2 * schedule.step_size <= num_steps (the '
        f'remaining updates sit on the floor)')


def _multistep_check(s, n):
  late = [b for b in s['boundaries'] if b >= n]
  if late:
    raise ValueError(f"schedule.boundaries={tuple(s['boundaries'])} has {late} >= num_steps={n}: "
                     f'those LR drops would never happen')


def _sweep_length(r, num_steps):
  del num_steps
  return int(r['num_steps'])


def _sweep_check(r, n):
  if _sweep_length(r, n) != n:
    raise ValueError(f"lr_range.num_steps={r['num_steps']} is the length of the LR range sweep "
                     f'but num_steps={n}: they must be equal')


# --- The registry --------------------------------------------------------------------------

_CLR_MODE = ('triangular', 'CLR: triangular | triangular2 | exp_range')

SCHEDULES: dict[str, ScheduleKind] = {
    'triangular': ScheduleKind(
        factory='triangular',
        fields={
            'base_lr': (0.1, 'CLR lower LR (start and end of each cycle)'),
            'max_lr': (3.0, 'CLR upper LR (at step_size, 3 step_size, ...)'),
            'step_size': (5000, 'updates per half cycle'),
            'mode': _CLR_MODE,
            'gamma': (1.0, "exp_range: amplitude x gamma ** update ('triangular' ignores it)"),
            'num_cycles': (1, 'cycles in the run: num_steps = 2 * step_size * num_cycles'),
        },
        factory_args={'base_lr': 'base_lr', 'max_lr': 'max_lr', 'step_size': 'step_size',
                      'mode': 'mode', 'gamma': 'gamma'},
        length=_clr_length, check=_clr_check, lr_fields=('base_lr', 'max_lr'),
        bounds=lambda mx, clr, one: {'max_lr': mx, 'base_lr': clr},
        durations=('step_size',),
        describe=lambda s: f"CLR {_g(s['base_lr'])}–{_g(s['max_lr'])}, SS {s['step_size']}"),
    'one_cycle': ScheduleKind(
        factory='one_cycle',
        fields={
            'max_lr': (3.0, 'peak LR'),
            'pct_start': (0.45, 'fraction of the run spent rising (PyTorch OneCycleLR)'),
            'div_factor': (10.0, 'initial LR = max_lr / div_factor'),
            'final_div_factor': (1000.0, 'final LR = initial LR / final_div_factor'),
            'three_phase': (True, 'up, symmetric down, then annihilate (Smith 2018)'),
            'anneal': ('linear', "'linear' | 'cos'"),
        },
        factory_args={'max_lr': 'max_lr', 'pct_start': 'pct_start', 'div_factor': 'div_factor',
                      'final_div_factor': 'final_div_factor', 'three_phase': 'three_phase',
                      'anneal': 'anneal'},
        total_steps_arg='total_steps', length=_run_length, lr_fields=('max_lr',),
        # The run starts at the suggested 1cycle minimum: max_lr / div_factor = min.
        bounds=lambda mx, clr, one: {'max_lr': mx, 'div_factor': mx / one},
        describe=lambda s: f"1cycle {_g(s['max_lr'] / s['div_factor'])}–{_g(s['max_lr'])}"),
    'caffe_one_cycle': ScheduleKind(
        factory='caffe_one_cycle',
        fields={
            'base_lr': (0.1, 'start LR, and the end of the down half'),
            'max_lr': (3.0, 'peak LR at step_size'),
            'step_size': (5000, 'updates of each half (up, then down); the floor after 2 x'),
            'floor_div': (1000.0, 'floor LR from 2 * step_size on = base_lr / floor_div'),
        },
        factory_args={'base_lr': 'base_lr', 'max_lr': 'max_lr', 'step_size': 'step_size',
                      'floor_div': 'floor_div'},
        length=_run_length, check=_caffe_check, lr_fields=('base_lr', 'max_lr'),
        bounds=lambda mx, clr, one: {'max_lr': mx, 'base_lr': one},
        durations=('step_size',),
        # Proportional scaling rounds e.g. 2148 of 4882 updates to 4 of 8, and 2 x 4 fills the
        # whole shrunk run: the floor phase would vanish. 3/8 keeps up, down and floor visible.
        smoke_fractions={'step_size': fractions.Fraction(3, 8)},
        describe=lambda s: f"1cycle {_g(s['base_lr'])}–{_g(s['max_lr'])}, SS {s['step_size']}"),
    'multistep': ScheduleKind(
        factory='multistep',
        fields={
            'base_lr': (0.1, 'LR before the first boundary'),
            'boundaries': ((50_000, 70_000), 'updates at which the LR is multiplied by gamma'),
            'gamma': (0.1, 'factor at each boundary'),
        },
        factory_args={'base_lr': 'base_lr', 'boundaries': 'boundaries', 'gamma': 'gamma'},
        check=_multistep_check, lr_fields=('base_lr',), peak_field='base_lr',
        durations=('boundaries',),
        describe=lambda s: (f"{_g(s['base_lr'])} ×{_g(s['gamma'])} at "
                            f"{', '.join(map(str, s['boundaries']))}")),
    'step': ScheduleKind(
        factory='step_decay',
        fields={
            'base_lr': (0.1, 'LR at update 0'),
            'step_size': (5000, 'updates per decay'),
            'gamma': (0.1, 'factor every step_size updates'),
        },
        factory_args={'base_lr': 'base_lr', 'step_size': 'step_size', 'gamma': 'gamma'},
        lr_fields=('base_lr',), peak_field='base_lr', durations=('step_size',),
        describe=lambda s: f"{_g(s['base_lr'])} ×{_g(s['gamma'])} every {s['step_size']}"),
    'inv': ScheduleKind(
        factory='inv',
        fields={
            'base_lr': (0.01, 'LR at update 0'),
            'gamma': (1e-4, 'lr = base_lr * (1 + gamma * update) ** -power (per update)'),
            'power': (0.75, 'see gamma'),
        },
        factory_args={'base_lr': 'base_lr', 'gamma': 'gamma', 'power': 'power'},
        lr_fields=('base_lr',), peak_field='base_lr',
        describe=lambda s: f"inv {_g(s['base_lr'])}, γ {_g(s['gamma'])}, p {_g(s['power'])}"),
    'constant': ScheduleKind(
        factory='constant',
        fields={'base_lr': (0.1, 'the LR of every update')},
        factory_args={'value': 'base_lr'},
        lr_fields=('base_lr',), peak_field='base_lr',
        describe=lambda s: f"constant {_g(s['base_lr'])}"),
    'lr_range': ScheduleKind(
        # The sweep's arguments live in config.lr_range (its other fields drive the test), so
        # its schedule dict is only the name.
        factory='lr_range', fields={}, section='lr_range',
        factory_args={'min_lr': 'min_lr', 'max_lr': 'max_lr', 'num_steps': 'num_steps',
                      'mode': 'mode'},
        length=_sweep_length, check=_sweep_check, lr_fields=('min_lr', 'max_lr'),
        describe=lambda r: f"range {_g(r['min_lr'])}–{_g(r['max_lr'])} ({r['mode']})"),
    'warmup_cosine': ScheduleKind(
        factory='warmup_cosine',
        fields={
            'max_lr': (3.0, 'peak LR, reached at warmup_steps'),
            'warmup_steps': (0, 'linear warm-up updates from 0 (then cosine to 0 at num_steps)'),
        },
        factory_args={'peak_lr': 'max_lr', 'warmup_steps': 'warmup_steps'},
        total_steps_arg='total_steps', length=_run_length, lr_fields=('max_lr',),
        durations=('warmup_steps',),
        describe=lambda s: (f"warm-up {s.get('warmup_steps', 0)} + cosine, "
                            f"peak {_g(s['max_lr'])}")),
    'linear_decay': ScheduleKind(
        factory='linear_decay',
        fields={
            'max_lr': (0.1, 'peak LR, at warmup_steps; then linear to end_lr at num_steps'),
            'warmup_steps': (0, 'linear warm-up updates from 0 (0: decay from update 0)'),
            'end_lr': (0.0, 'LR reached at num_steps (0: decay to zero)'),
        },
        factory_args={'peak_lr': 'max_lr', 'warmup_steps': 'warmup_steps', 'end_lr': 'end_lr'},
        total_steps_arg='total_steps', length=_run_length, lr_fields=('max_lr', 'end_lr'),
        durations=('warmup_steps',),
        describe=lambda s: (f"linear decay {_g(s['max_lr'])} → {_g(s['end_lr'])}"
                            + (f", warm-up {s['warmup_steps']}" if s['warmup_steps'] else ''))),
    'wsd': ScheduleKind(
        factory='warmup_stable_decay',
        fields={
            'max_lr': (0.1, 'the stable (peak) LR'),
            'warmup_steps': (0, 'linear warm-up updates from 0'),
            'decay_fraction': (0.2, 'fraction of num_steps spent cooling down, at the end'),
            'cooldown': ('1-sqrt', "cooldown shape: '1-sqrt' (Hägele et al. 2024) | 'linear'"),
            'end_lr': (0.0, 'LR reached at num_steps'),
        },
        factory_args={'peak_lr': 'max_lr', 'warmup_steps': 'warmup_steps',
                      'decay_fraction': 'decay_fraction', 'cooldown': 'cooldown',
                      'end_lr': 'end_lr'},
        total_steps_arg='total_steps', length=_run_length, lr_fields=('max_lr', 'end_lr'),
        durations=('warmup_steps',),
        describe=lambda s: (f"WSD {_g(s['max_lr'])}, {s['cooldown']} cooldown over "
                            f"{_g(100 * s['decay_fraction'])} %")),
    'warmup_constant': ScheduleKind(
        factory='warmup_constant',
        fields={
            'max_lr': (0.1, 'the LR after the warm-up'),
            'warmup_steps': (0, 'linear warm-up updates from 0'),
        },
        factory_args={'peak_lr': 'max_lr', 'warmup_steps': 'warmup_steps'},
        total_steps_arg='total_steps', lr_fields=('max_lr',), durations=('warmup_steps',),
        describe=lambda s: (f"constant {_g(s['max_lr'])}"
                            + (f" after {s['warmup_steps']} warm-up" if s['warmup_steps']
                               else ''))),
}

# What the momentum schedules read from the LR schedule, so that the momentum is lowest exactly
# where the LR peaks (Smith 2018 §3.4):
#   'one_cycle' mirrors the LR 1cycle's phases: these fields of config.schedule when it is a
#     'one_cycle', else the 'one_cycle' defaults above (a constant or CLR LR has no phases);
#   'cyclical' with momentum_schedule.step_size = 0 takes config.schedule.step_size (the CLR or
#     Caffe 1cycle half cycle); the LR schedule must then have one.
MOMENTUM_FROM_LR = {'one_cycle': ('pct_start', 'three_phase', 'anneal'),
                    'cyclical': ('step_size',)}


def kind(name: str) -> ScheduleKind:
  """The registry entry of `name`; ValueError listing the known names otherwise."""
  if name not in SCHEDULES:
    raise ValueError(f'schedule.name must be one of {tuple(SCHEDULES)}, got {name!r}')
  return SCHEDULES[name]


def schedule_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.schedule` for schedule `name`: its defaults with `overrides`, plus `name`.

  Raises:
    ValueError: an unknown schedule, or a field the schedule does not take (the message names
      the schedule and its fields).

  Examples:
    >>> s = schedule_config('one_cycle', max_lr=1.0)
    >>> s.name, s.max_lr, s.div_factor, 'base_lr' in s
    ('one_cycle', 1.0, 10.0, False)
    >>> schedule_config('one_cycle', gamma=0.5)
    Traceback (most recent call last):
    ValueError: schedule 'one_cycle' has no field 'gamma'; its fields: max_lr, pct_start, div_factor, final_div_factor, three_phase, anneal
  """
  k = kind(name)
  unknown = [f for f in overrides if f not in k.fields]
  if unknown:
    where = (f'its arguments are config.{k.section}' if k.section != 'schedule'
             else f"its fields: {', '.join(k.fields)}")
    raise ValueError(f"schedule {name!r} has no field {', '.join(map(repr, unknown))}; {where}")
  c = ml_collections.ConfigDict({'name': name, **k.defaults()})
  for field, value in overrides.items():
    c[field] = value  # typed by the default: an int LR becomes a float, as a CLI override would
  return c


def args_of(config: Any) -> Mapping[str, Any]:
  """The section the LR schedule of `config` reads (`config.schedule`, or `config.lr_range`)."""
  return config[kind(config.schedule.name).section]


def momentum_lr_args(config: Any) -> dict[str, Any]:
  """The LR schedule's values the momentum schedule of `config` reads (see MOMENTUM_FROM_LR)."""
  m, s = config.momentum_schedule, config.schedule
  if m.name == 'one_cycle':
    source = s if s.name == 'one_cycle' else SCHEDULES['one_cycle'].defaults()
    return {f: source[f] for f in MOMENTUM_FROM_LR['one_cycle']}
  if m.name == 'cyclical':
    step_size = m.step_size or s.get('step_size')
    if not step_size:
      raise ValueError(f'momentum_schedule.step_size is 0 (the LR step size) but schedule '
                       f'{s.name!r} has no step_size: set momentum_schedule.step_size')
    return {'step_size': step_size}
  return {}


def apply_lr_bounds(schedule: Any, *, max_lr: float, min_lr_clr: float,
                    min_lr_1cycle: float) -> dict[str, float]:
  """Sets a range-test suggestion's LR bounds on `schedule` (in place); returns what it set.

  'triangular': max_lr, base_lr = min_lr_clr. 'one_cycle': max_lr, div_factor = max_lr /
  min_lr_1cycle (so the run starts at the 1cycle min). 'caffe_one_cycle': max_lr, base_lr =
  min_lr_1cycle.

  Raises:
    ValueError: the schedule has no LR range to set.
  """
  bounds = kind(schedule.name).bounds
  if bounds is None:
    names = tuple(n for n, k in SCHEDULES.items() if k.bounds is not None)
    raise ValueError(f'schedule.name={schedule.name!r} has no LR range to set; a range-test '
                     f'suggestion applies to {names}.')
  values = bounds(float(max_lr), float(min_lr_clr), float(min_lr_1cycle))
  for field, value in values.items():
    schedule[field] = value
  return values


def sweep_schedule(config: Any) -> None:
  """Turns `config` (a copy, in place) into its range-test schedule: `schedule = {'lr_range'}`.

  A cyclical momentum that took the LR's step size keeps it (it is written into
  momentum_schedule.step_size first); a 1cycle momentum then mirrors the 1cycle defaults.
  """
  if config.momentum_schedule.name == 'cyclical' and not config.momentum_schedule.step_size:
    config.momentum_schedule.step_size = int(momentum_lr_args(config)['step_size'])
  config.schedule = schedule_config('lr_range')
  if config.is_locked:  # a replaced section is a new dict: lock it like the rest
    config.schedule.lock()
