"""The result of an LR range test: what was measured, its reading, its files and its plot."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from superconv import metrics as metrics_lib
from superconv import storage
from superconv.lr_range.reading import smooth_accuracy

RESULT_FILE = 'lr_range.json'
PLOT_FILE = 'lr_range.png'
# What a training run owns in its workdir: `RangeTestResult.save` never writes these.
RUN_FILES = ('metrics.jsonl', 'summary.json', 'config.json', 'checkpoints')
# How a run's LR bounds follow the tested effective step lr / (1 - m) (`effective_step_scale`).
EFFECTIVE_STEP_RULES = ('cap', 'match')


class UnreliableReading(ValueError):
  """The range test gave no reading a run can use (the reason is the message)."""


@dataclasses.dataclass
class RangeTestResult:
  """Everything a range test measured, its reading, and how to save and draw it."""
  lrs: np.ndarray                 # [n] LR of update s
  train_loss: np.ndarray          # [n] loss of batch s (before update s)
  train_loss_smoothed: np.ndarray  # [n] bias-corrected EMA
  eval_steps: np.ndarray          # [m] updates done at each evaluation (0 first)
  eval_lrs: np.ndarray            # [m] schedule(step)
  eval_accuracy: np.ndarray       # [m]
  eval_loss: np.ndarray           # [m]
  suggestion: dict
  loss_suggestion: dict
  diverged_at: int | None = None  # update whose smoothed loss triggered the stop
  diverge_reason: str = ''
  settings: dict = dataclasses.field(default_factory=dict)
  wall_seconds: float = 0.0
  # With repeats: every sweep (this result's curves are the median one's), and the spread of
  # their readings (`combine`).
  runs: list = dataclasses.field(default_factory=list)
  spread: dict = dataclasses.field(default_factory=dict)
  cost: dict = dataclasses.field(default_factory=dict)  # the sweep's compute against its run's
  # Every evaluated metric by name ([m] each): 'accuracy' and 'loss' for image classifiers,
  # whatever `eval_fn` returns for `find`.
  eval_metrics: dict = dataclasses.field(default_factory=dict)

  @property
  def reliable(self) -> bool:
    return bool(self.suggestion.get('reliable', True))

  def _usable(self) -> dict:
    if not self.reliable:
      raise UnreliableReading(
          f"the range test gave no reliable reading: {self.suggestion.get('explanation', '')} "
          "(the raw value is suggestion['max_lr'], for inspection only)")
    return self.suggestion

  @property
  def max_lr(self) -> float:
    """The suggested max LR; raises `UnreliableReading` (naming why) for an unreliable one."""
    return float(self._usable()['max_lr'])

  @property
  def min_lr_clr(self) -> float:
    return float(self._usable()['min_lr_clr'])

  @property
  def min_lr_1cycle(self) -> float:
    return float(self._usable()['min_lr_1cycle'])

  def tested_momentum(self, lr: float | None = None) -> float | None:
    """The momentum the sweep ran at when its LR reached `lr` (default: the suggested max):
    constant, or swept linearly (`momentum_swept` [m0, m1] over the sweep); None if unknown."""
    swept = self.settings.get('momentum_swept')
    if swept:
      lr = self.suggestion['max_lr'] if lr is None else lr
      n = int(self.settings.get('num_steps') or len(self.lrs))
      reached = np.flatnonzero(np.asarray(self.lrs) >= lr * (1 - 1e-6))
      s = int(reached[0]) if reached.size else n
      return float(swept[0] + (swept[1] - swept[0]) * min(s, n) / n)
    m = self.settings.get('identity', {}).get('momentum')
    return None if m is None or isinstance(m, (list, dict)) else float(m)

  def effective_step_scale(self, lr_schedule: Callable, momentum_schedule: Callable | None,
                           num_steps: int, rule: str = 'cap') -> float:
    r"""The factor a run's LR bounds are scaled by so its effective step follows the test's.

    SGD with momentum m moves by about lr / (1 - m) per update in steady state. The sweep found
    E = max_lr / (1 - m_tested) safe (`tested_momentum`); the run's largest is
    R = max_t lr(t) / (1 - m(t)) over its `num_steps` updates. 'cap': min(1, E / R) (never a
    larger step than tested; superconv's default, measured in docs/lr_range.md); 'match': E / R.
    1.0 when the tested momentum is unknown, the run has no momentum schedule, or the optimizer
    is Adam's family (it records 'b1': its normalised step does not grow as 1 / (1 - b1)).

    Examples:
      >>> import numpy as np
      >>> from superconv import schedules
      >>> r = RangeTestResult(*[np.zeros(1)] * 7, suggestion={'max_lr': 1.0, 'reliable': True},
      ...                     loss_suggestion={}, settings={'identity': {'momentum': 0.9}})
      >>> lr, m = schedules.constant(1.0), schedules.constant(0.95)
      >>> round(r.effective_step_scale(lr, m, 10), 4)   # (1 / 0.1) / (1 / 0.05)
      0.5
    """
    if rule not in EFFECTIVE_STEP_RULES:
      raise ValueError(f'rule must be one of {EFFECTIVE_STEP_RULES}, got {rule!r}')
    m_tested = self.tested_momentum()
    adam = 'b1' in (self.settings.get('identity', {}).get('optimizer') or {})
    if m_tested is None or momentum_schedule is None or adam:
      return 1.0  # Adam's step is normalised: it does not grow as 1 / (1 - b1)
    t = jnp.arange(int(num_steps))
    run = float(jnp.max(jax.vmap(lr_schedule)(t) / (1.0 - jax.vmap(momentum_schedule)(t))))
    scale = self.max_lr / (1.0 - m_tested) / run
    return min(1.0, scale) if rule == 'cap' else scale

  def bounds(self, kind: str, num_steps: int, *, momentum: tuple[float, float] | None = None,
             rule: str | None = 'cap', **schedule_kw) -> dict:
    """The LR bounds of a run of `kind` ('one_cycle' or 'clr') and `num_steps` updates with a
    cyclical `momentum` (max, min) (None: the tested momentum, constant), the effective-step
    `rule` applied (None: the reading as it is). Keys: 'max_lr', 'min_lr', 'scale'."""
    lr_fn, m_fn, lo = self._schedules(kind, num_steps, momentum, 1.0, schedule_kw)
    scale = 1.0 if rule is None else self.effective_step_scale(lr_fn, m_fn, num_steps, rule)
    return {'max_lr': self.max_lr * scale, 'min_lr': lo * scale, 'scale': scale}

  def schedules(self, kind: str, num_steps: int, *,
                momentum: tuple[float, float] | None = None, rule: str | None = 'cap',
                **schedule_kw) -> tuple[Callable, Callable | None]:
    """(LR schedule, momentum schedule) as optax schedules for a run of `num_steps` updates.

    'one_cycle': `schedules.one_cycle(num_steps, max_lr, div_factor=max_lr / min_lr_1cycle)`
    with `one_cycle_momentum(num_steps, base_momentum=min, max_momentum=max)`; 'clr':
    `schedules.triangular(min_lr_clr, max_lr, step_size)` (default step_size num_steps // 2:
    one cycle) with `cyclical_momentum(max, min, step_size)`. `momentum` None: the tested
    momentum held constant (None if unknown). The bounds are scaled by `bounds`' rule. Extra
    keywords go to the LR schedule. Raises `UnreliableReading` for an unreliable result.

    So a loop goes from the test to training in two lines::

      lr, m = result.schedules('one_cycle', 5000, momentum=(0.95, 0.85))
      tx = optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=m)
    """
    scale = self.bounds(kind, num_steps, momentum=momentum, rule=rule, **schedule_kw)['scale']
    lr_fn, m_fn, _ = self._schedules(kind, num_steps, momentum, scale, schedule_kw)
    return lr_fn, m_fn

  def _schedules(self, kind, num_steps, momentum, scale, kw):
    from superconv import schedules  # pylint: disable=g-import-not-at-top
    hi = self.max_lr * scale
    if momentum is not None:
      m_max, m_min = (float(m) for m in momentum)
    m_const = self.tested_momentum()
    if kind == 'one_cycle':
      lo = self.min_lr_1cycle
      lr_fn = schedules.one_cycle(num_steps, hi, div_factor=self.max_lr / lo, **kw)
      m_fn = (schedules.one_cycle_momentum(num_steps, base_momentum=m_min, max_momentum=m_max)
              if momentum is not None else None)
    elif kind == 'clr':
      lo = self.min_lr_clr
      step_size = int(kw.pop('step_size', max(1, num_steps // 2)))
      lr_fn = schedules.triangular(lo * scale, hi, step_size, **kw)
      m_fn = (schedules.cyclical_momentum(m_max, m_min, step_size) if momentum is not None
              else None)
    else:
      raise ValueError(f"kind must be 'one_cycle' or 'clr', got {kind!r}")
    if m_fn is None and m_const is not None:
      m_fn = schedules.constant(m_const)
    return lr_fn, m_fn, lo

  def summary(self) -> str:
    s = self.suggestion
    line = (f"suggested LR range: {s['min_lr_clr']:.4g} .. {s['max_lr']:.4g} for CLR (1cycle: "
            f"{s['min_lr_1cycle']:.4g} .. {s['max_lr']:.4g}), method {s['method']}: "
            f"{s['explanation']}")
    loss = self.loss_suggestion
    if loss.get('steepest_lr') is not None:
      line += (f" Loss-based: steepest {loss['steepest_lr']:.3g}, valley "
               f"{loss['valley_lr']:.3g}, minimum {loss['min_loss_lr']:.3g}.")
    if self.diverged_at is not None:
      line += f' Stopped early: {self.diverge_reason}.'
    if self.spread:
      p = self.spread
      line += (f" Median of {p['repeats']} sweeps (different data orders): max_lr "
               f"{p['max_lr_min']:.4g} .. {p['max_lr_max']:.4g}, {p['flat']} flat, "
               f"{p['unreliable']} unreliable.")
    if self.cost.get('fraction') is not None:
      line += (f" Cost: {self.cost['fraction']:.1%} of the run it configures "
               f"({self.cost['run_steps']} updates).")
    if self.settings.get('eval_split'):
      line += f" Read on the {self.settings['eval_split']} split."
    if not self.reliable:
      line = 'UNRELIABLE reading (not a usable LR): ' + line
    return line

  def to_dict(self) -> dict:
    f = lambda a: [float(x) for x in a]
    return {
        'lr': f(self.lrs), 'train_loss': f(self.train_loss),
        'train_loss_smoothed': f(self.train_loss_smoothed),
        'eval': {'step': [int(x) for x in self.eval_steps], 'lr': f(self.eval_lrs),
                 'accuracy': f(self.eval_accuracy), 'loss': f(self.eval_loss),
                 'accuracy_smoothed': f(smooth_accuracy(self.eval_accuracy,
                                                        self.suggestion.get('window', 5))),
                 'metrics': {k: f(v) for k, v in self.eval_metrics.items()}},
        'suggestion': self.suggestion, 'loss_suggestion': self.loss_suggestion,
        'diverged_at': self.diverged_at,
        'diverged_lr': None if self.diverged_at is None else float(self.lrs[self.diverged_at]),
        'diverge_reason': self.diverge_reason, 'settings': self.settings,
        'wall_seconds': self.wall_seconds,
        'spread': self.spread, 'cost': self.cost,
        'repeats': [{k: v for k, v in r.to_dict().items() if k not in ('spread', 'repeats',
                                                                       'cost')}
                    for r in self.runs] if len(self.runs) > 1 else [],
    }

  def rows(self) -> list[dict]:
    """One metrics row per evaluation, in the trainer's format (plus the sweep's smoothed loss
    at that point), so tables and plots read sweeps and training runs alike."""
    rows = []
    for st, lr, acc, loss in zip(self.eval_steps, self.eval_lrs, self.eval_accuracy,
                                 self.eval_loss):
      row = {'step': int(st), 'lr': float(lr), 'eval_accuracy': float(acc),
             'eval_loss': float(loss)}
      if 0 < st <= len(self.train_loss_smoothed):
        row['train_loss'] = float(self.train_loss_smoothed[st - 1])
      rows.append(row)
    return rows

  def summary_dict(self) -> dict:
    """summary.json of a sweep: a training run's keys, its "final" accuracy the one at the top
    of the sweep (or where it stopped), plus the suggestion."""
    rows = self.rows()
    accs = [r['eval_accuracy'] for r in rows]
    best = max(range(len(accs)), key=lambda i: accs[i] if accs[i] == accs[i] else -1.0,
               default=None)
    return {
        'final_eval_accuracy': accs[-1] if accs else None,
        'best_eval_accuracy': accs[best] if best is not None else None,
        'best_step': rows[best]['step'] if best is not None else None,
        'best_lr': rows[best]['lr'] if best is not None else None,
        'steps': len(self.lrs), 'diverged_at': self.diverged_at,
        'suggestion': self.suggestion, 'wall_seconds': self.wall_seconds,
        **metrics_lib.provenance(),
    }

  def save(self, workdir: str, *, plot: bool = True) -> str:
    """Writes the sweep's own files into `workdir`: lr_range.json (everything measured, with
    provenance; `load` reads it back) and lr_range.png. Never a file a training run owns
    (`RUN_FILES`), so a result can be saved into a run's workdir. Returns the json path."""
    storage.makedirs(workdir)
    path = os.path.join(workdir, RESULT_FILE)
    metrics_lib.write_json(path, {**self.to_dict(), 'provenance': metrics_lib.provenance()})
    if plot and jax.process_index() == 0:
      self.plot(os.path.join(workdir, PLOT_FILE))
    return path

  def save_run_files(self, workdir: str) -> None:
    """A sweep run as a program (`mode=lr_range`) owns its workdir: its metrics.jsonl (one row
    per evaluation) and summary.json, in the trainer's format, so tables read sweeps and runs
    alike."""
    writer = metrics_lib.MetricWriter(os.path.join(workdir, 'metrics.jsonl'))  # starts it empty
    for row in self.rows():
      writer.write(row)
    writer.close()  # on an object store: the rows as one object write
    metrics_lib.write_json(os.path.join(workdir, 'summary.json'), self.summary_dict())

  def plot(self, path: str) -> None:
    """Writes `figure()` to `path` (a local path or an object store's)."""
    # Rendered to bytes, then written through epath: `path` may be on an object store.
    buf = io.BytesIO()
    self.figure().savefig(buf, format=os.path.splitext(os.fspath(path))[1][1:] or 'png', dpi=120)
    storage.write_atomic(path, buf.getvalue())

  def figure(self):
    """The read metric and the losses against LR, the suggestion marked, or marked unreliable
    (a matplotlib Figure on the Agg canvas; no pyplot state)."""
    # pylint: disable=g-import-not-at-top
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    # pylint: enable=g-import-not-at-top
    fig = Figure(figsize=(8, 7), layout='constrained')
    FigureCanvasAgg(fig)
    ax_acc, ax_loss = fig.subplots(2, 1, sharex=True)
    s = self.suggestion
    split = self.settings.get('eval_split', 'held-out')
    others = [r for r in self.runs if r.eval_accuracy is not self.eval_accuracy]
    for i, run in enumerate(others):  # the other repeats, faint
      ax_acc.plot(run.eval_lrs, smooth_accuracy(run.eval_accuracy, s.get('window', 5)), '-',
                  color='0.6', lw=1, label='other repeats' if i == 0 else None)
      ax_loss.plot(run.lrs, run.train_loss_smoothed, '-', color='0.6', lw=1)
    metric = self.settings.get('metric', 'accuracy')
    curve = self.eval_metrics.get(metric, self.eval_accuracy)
    if metric == 'train_loss':
      metric, curve = 'accuracy', self.eval_accuracy
    ax_acc.plot(self.eval_lrs, curve, 'o', ms=3, alpha=0.5, label=f'{split} {metric}')
    ax_acc.plot(self.eval_lrs, smooth_accuracy(curve, s.get('window', 5)), '-',
                label='smoothed (median)')
    top = np.asarray(curve, np.float64)[np.isfinite(curve)]
    if self.settings.get('maximize') is False and len(top):  # a loss: keep its useful range
      ax_acc.set_ylim(max(0.0, top.min() * 0.9), min(top.max(), 2 * top[0]) * 1.05)
    ax_loss.plot(self.lrs, self.train_loss, '-', lw=0.5, alpha=0.4, label='train loss')
    ax_loss.plot(self.lrs, self.train_loss_smoothed, '-', label='train loss (EMA)')
    ax_loss.plot(self.eval_lrs, self.eval_loss, 'o-', ms=3, label=f'{split} loss')
    finite = self.train_loss_smoothed[np.isfinite(self.train_loss_smoothed)]
    if len(finite):  # Diverging losses would squash the useful part of the plot.
      every = np.concatenate([finite, self.eval_loss[np.isfinite(self.eval_loss)]])
      ax_loss.set_ylim(max(0.0, every.min() * 0.9), min(every.max(), 4 * finite[0]) * 1.1)
    for ax in (ax_acc, ax_loss):
      if not self.reliable:  # no bounds to draw: the raw value in grey, named as unusable
        ax.axvline(s['max_lr'], color='0.5', ls='--',
                   label=f"unreliable, not a reading ({s['max_lr']:.3g})")
      else:
        ax.axvline(s['max_lr'], color='C3', label=f"max_lr {s['max_lr']:.3g}")
        ax.axvline(s['min_lr_clr'], color='C3', ls='--',
                   label=f"CLR min {s['min_lr_clr']:.3g}")
        ax.axvline(s['min_lr_1cycle'], color='C3', ls=':',
                   label=f"1cycle min {s['min_lr_1cycle']:.3g}")
      if self.diverged_at is not None:
        ax.axvline(self.lrs[self.diverged_at], color='k', ls='-.', label='stopped')
      ax.grid(alpha=0.3)
    for key, style in (('steepest_lr', (0, (1, 3))), ('valley_lr', (0, (5, 3)))):
      if self.loss_suggestion.get(key) is not None:
        ax_loss.axvline(self.loss_suggestion[key], color='C2', ls=style,
                        label=f"{key[:-3]} {self.loss_suggestion[key]:.3g}")
    if self.settings.get('mode') == 'exp':
      ax_loss.set_xscale('log')
    flat = ' (flat: accuracy never fell)' if s['flat'] else ''
    repeats = f", median of {self.spread['repeats']} sweeps" if self.spread else ''
    verdict = ' - UNRELIABLE: no usable reading' if not self.reliable else ''
    ax_acc.set_title(f"LR range test {self.settings.get('model', '')}{flat}{repeats}{verdict}",
                     color='C3' if verdict else 'k')
    ax_acc.set_ylabel(f'{split} {metric}')
    ax_loss.set_ylabel('loss')
    ax_loss.set_xlabel('learning rate')
    ax_acc.legend(fontsize=7)
    ax_loss.legend(fontsize=7)
    return fig


def combine(results: list[RangeTestResult]) -> RangeTestResult:
  """One result from repeated sweeps: the median reading, and the spread of all of them.

  The suggestion is that of the sweep whose max_lr is the median of the reliable readings (for
  an even count the lower of the middle two: the cautious side), with its curves; `spread`
  holds every max_lr, their min and max, and how many readings were flat or unreliable. Fewer
  than half of the sweeps reliable: that median is still reported, but marked unreliable (one
  reading out of three is what a single noisy sweep gives, not an answer the repeats agree on).
  No reliable reading: the first sweep's (unreliable) suggestion.

  Examples:
    >>> mk = lambda lr, ok=True: RangeTestResult(*[np.zeros(1)] * 7, suggestion={
    ...     'max_lr': lr, 'reliable': ok, 'flat': False}, loss_suggestion={})
    >>> r = combine([mk(0.3), mk(0.1), mk(0.2), mk(9.0, False)])
    >>> r.max_lr, r.spread['max_lr_min'], r.spread['max_lr_max'], r.spread['unreliable']
    (0.2, 0.1, 0.3, 1)
    >>> combine([mk(0.3), mk(9.0, False), mk(9.0, False)]).suggestion['reliable']
    False
  """
  if len(results) == 1:
    return results[0]
  reliable = sorted((r for r in results if r.suggestion.get('reliable', True)),
                    key=lambda r: r.suggestion['max_lr'])
  chosen = reliable[(len(reliable) - 1) // 2] if reliable else results[0]
  lrs = [r.suggestion['max_lr'] for r in reliable] or [results[0].suggestion['max_lr']]
  spread = {'repeats': len(results), 'max_lr': [r.suggestion['max_lr'] for r in results],
            'max_lr_min': float(min(lrs)), 'max_lr_max': float(max(lrs)),
            'max_lr_median': float(chosen.suggestion['max_lr']),
            'flat': sum(bool(r.suggestion.get('flat')) for r in results),
            'unreliable': len(results) - len(reliable)}
  suggestion = chosen.suggestion
  if reliable and 2 * len(reliable) < len(results):
    suggestion = {**suggestion, 'reliable': False, 'method': 'unreliable',
                  'explanation': f'only {len(reliable)} of {len(results)} sweeps gave a reading '
                                 f'(max_lr {chosen.suggestion["max_lr"]:.4g}); the repeats do '
                                 'not agree on an answer: lengthen the sweep or check the range.'}
  return dataclasses.replace(chosen, runs=list(results), spread=spread, suggestion=suggestion,
                             wall_seconds=sum(r.wall_seconds for r in results))


def _from_dict(d: dict) -> RangeTestResult:
  a = lambda x: np.asarray(x, np.float64)
  ev = d['eval']
  return RangeTestResult(
      lrs=a(d['lr']), train_loss=a(d['train_loss']),
      train_loss_smoothed=a(d['train_loss_smoothed']),
      eval_steps=np.asarray(ev['step'], np.int64), eval_lrs=a(ev['lr']),
      eval_accuracy=a(ev['accuracy']), eval_loss=a(ev['loss']),
      suggestion=d['suggestion'], loss_suggestion=d.get('loss_suggestion', {}),
      diverged_at=d.get('diverged_at'), diverge_reason=d.get('diverge_reason', ''),
      settings=d.get('settings', {}), wall_seconds=float(d.get('wall_seconds', 0.0)),
      spread=d.get('spread', {}), cost=d.get('cost', {}),
      eval_metrics={k: a(v) for k, v in ev.get('metrics', {}).items()})


def load(path: str) -> RangeTestResult:
  """A result saved by `RangeTestResult.save` (its lr_range.json, or the folder holding it)."""
  p = storage.path(path)
  if p.is_dir():
    p = p / RESULT_FILE
  d = json.loads(p.read_text())
  if not isinstance(d, dict) or 'suggestion' not in d or 'eval' not in d:
    raise ValueError(f'{os.fspath(path)!r} is not a saved range test (no suggestion/eval)')
  result = _from_dict(d)
  result.runs = [_from_dict(r) for r in d.get('repeats', [])]
  for r in result.runs:  # the median sweep is this result's own curves
    if np.array_equal(r.lrs, result.lrs) and np.array_equal(r.train_loss, result.train_loss):
      r.eval_accuracy = result.eval_accuracy
  return result
