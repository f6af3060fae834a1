"""Reading experiments/results/: studies, runs, groups of seeds, mean curves, iterations.

Layout (written by `experiments.run`)::

  results/<study>/manifest.json
  results/<study>/<arm>/seed<N>/{run.json, metrics.jsonl, summary.json[, config.json]}

A study's manifest states the question it asks, the command that (re)makes it, and each arm's
config file, config argument, `--set` overrides and seeds (`record_arm`). A *group* is every
seed of one (study, arm); only the arms a manifest names are read. Accuracies here are fractions
in [0, 1], as the trainer logs them; the tables print percentages.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import glob
import hashlib
import importlib.util
import json
import math
import os
import re
from typing import Any, Sequence

import numpy as np

from superconv import schedule_registry
from superconv.data import sources

# Config fields that change how a run is reported or scheduled, not what it computes: a
# `--set` of these keeps the run in its group (and matched to the paper's numbers).
PRESENTATION_KEYS = ('progress_bar', 'eval_every_steps', 'log_every_steps',
                     'checkpoint_every_steps', 'keep_checkpoints', 'steps_per_dispatch',
                     'cpu_steps_per_dispatch', 'cpu_unroll_min_steps',
                     'data.eval_batch_size', 'data.cache_dir', 'data.tfds_data_dir')
# Arguments that choose where data comes from or the seed, not the experiment.
NON_EXPERIMENT_ARGS = ('data', 'seed')
# Resolved-config fields that do not change the experiment (see `experiment_view`).
# The compute dtype is kept out too: a bf16 run is still a run of the paper's experiment (its
# `--set model.dtype=...` stays visible in the row's name).
_NOT_EXPERIMENT_FIELDS = PRESENTATION_KEYS + (
    'seed', 'distributed', 'data.source', 'data.path', 'data.cache_dir', 'data.tfds_data_dir',
    'model.dtype')
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def markers(name: str) -> tuple[str, str]:
  """The comment lines that open and close the generated block `name` in a docs page."""
  return f'<!-- begin {name} -->', f'<!-- end {name} -->'


def replace_block(text: str, block: str, start: str, end: str) -> str:
  """`text` with everything between the markers `start` and `end` replaced by `block`."""
  if start not in text or end not in text or text.index(end) < text.index(start):
    raise ValueError(f'no {start} ... {end} block to fill')
  before, rest = text.split(start, 1)
  _, after = rest.split(end, 1)
  return f'{before}{start}\n{block}{end}{after}'


def read_block(path: str, name: str) -> str:
  """The text of the generated block `name` in the file `path` (what `write_block` wrote)."""
  start, end = markers(name)
  with open(path) as f:
    text = f.read()
  if start not in text or end not in text:
    raise ValueError(f'{path}: no {start} ... {end} block')
  return text.split(start + '\n', 1)[1].split(end, 1)[0]


def write_block(path: str, name: str, text: str) -> None:
  """Replaces the generated block `name` of the docs page `path` with `text`.

  The one writer of generated documentation: every table and report that a script derives from
  committed results goes between `<!-- begin NAME -->` and `<!-- end NAME -->` in a page of
  docs/. README.md is written by hand and refused here.
  """
  if os.path.basename(path) == 'README.md':
    raise ValueError('README.md is written by hand; generated blocks live in docs/*.md')
  with open(path) as f:
    doc = f.read()
  start, end = markers(name)
  try:
    new = replace_block(doc, text if text.endswith('\n') else text + '\n', start, end)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from None
  with open(path, 'w') as f:
    f.write(new)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, 'docs')

def blocks_main(prog: str, description: str, doc: str, blocks, argv=None) -> int:
  """The command line of a script whose docs blocks are `blocks()` ({name: text}).

  Prints each block; with `--write [PAGE]` rewrites them in PAGE (default `doc`) instead.
  """
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog=prog, description=description)
  parser.add_argument('--write', nargs='?', const=doc, default='', metavar='PAGE',
                      help=f'rewrite the blocks of this docs page (default {doc})')
  ns = parser.parse_args(argv)
  for name, text in blocks().items():
    if ns.write:
      write_block(ns.write, name, text)
    else:
      print(f'{name}:\n{text}')
  return 0


def split_args(args: str) -> list[str]:
  return [p.strip() for p in (args or '').split(',') if p.strip()]


def _canonical_word(word: str) -> str:
  key, sep, value = word.partition('=')
  if not sep:
    return key.strip()
  value = value.strip()
  try:  # one spelling per number: 0.90 -> 0.9, 1e-5 -> 1e-05
    number = float(value)
    value = repr(int(number)) if number.is_integer() and 'e' not in value.lower() and (
        '.' not in value) else repr(number)
  except ValueError:
    pass
  return f'{key.strip()}={value}'


def canonical_args(args: str) -> str:
  """Sorted `key=value` words without `data=`/`seed=`, numbers in one spelling.

  Examples:
    >>> canonical_args('samples=10000, policy=clr,data=/x,seed=3')
    'policy=clr,samples=10000'
    >>> canonical_args('value=1e-5,sweep=wd'), canonical_args('value=0.90')
    ('sweep=wd,value=1e-05', 'value=0.9')
  """
  keep = [_canonical_word(p) for p in split_args(args)
          if p.split('=', 1)[0].strip() not in NON_EXPERIMENT_ARGS]
  return ','.join(sorted(keep))


def experiment_view(config: dict) -> dict:
  """A resolved config without the fields that do not change the experiment (seed, where the
  data is read from, logging cadence): two runs of one experiment have equal views."""
  view = json.loads(json.dumps(copy.deepcopy(config)))
  for field in _NOT_EXPERIMENT_FIELDS:
    *parents, leaf = field.split('.')
    node = view
    for part in parents:
      node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
      node.pop(leaf, None)
  # A schedule is compared on its own fields (its registry entry's): a record of the older flat
  # layout, or one filled in from default.py's CLR by `with_defaults`, carries other schedules'.
  sched = view.get('schedule')
  if isinstance(sched, dict) and sched.get('name') in schedule_registry.SCHEDULES:
    own = schedule_registry.SCHEDULES[sched['name']].fields
    view['schedule'] = {k: v for k, v in sched.items() if k == 'name' or k in own}
  if isinstance(view.get('model'), dict):
    view['model'].pop('num_classes', None)  # older records: now the dataset's class count
  return view


def with_defaults(config: dict) -> dict:
  """`config` (a run's recorded config.json) with the fields added to configs/default.py since
  it was written filled in from the defaults: a new field's default keeps the old behaviour, so
  an older run still matches the experiment it ran."""
  defaults = resolve('default', '')
  if defaults is None:
    return config

  def merge(base, over):
    if not (isinstance(base, dict) and isinstance(over, dict)):
      return over
    return {k: merge(base[k], over[k]) if k in base and k in over else over.get(k, base.get(k))
            for k in base.keys() | over.keys()}
  return merge(json.loads(defaults), config)


@functools.lru_cache(maxsize=None)
def resolve(stem: str, args: str, configs_dir: str = CONFIGS_DIR) -> str | None:
  """JSON of `experiment_view(configs/<stem>.py:get_config(args))`; None if it cannot load."""
  path = os.path.join(configs_dir, f'{stem}.py')
  try:
    spec = importlib.util.spec_from_file_location(f'_collect_config_{stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(args).to_dict()
  except Exception:  # pylint: disable=broad-except
    return None  # a stale reference or a missing file: matched by argument text instead
  return json.dumps(experiment_view(config), sort_keys=True)


def experiment_sets(sets: Sequence[str]) -> list[str]:
  """The `--set key=value`s that change what a run computes, sorted."""
  return sorted(s for s in sets if s.split('=', 1)[0].strip() not in PRESENTATION_KEYS)


MAX_SLUG = 200  # characters of an override slug (see `slug`)
MAX_NAME = 48  # characters of a study or arm folder name
MANIFEST = 'manifest.json'


def slug(args: str, sets: Sequence[str] = ()) -> str:
  """A folder name for an argument string plus the experiment-changing `--set`s.

  Examples:
    >>> slug('samples=10000,policy=clr')
    'policy-clr_samples-10000'
    >>> slug('', ['num_steps=100', 'progress_bar=False'])
    'default__num_steps-100'
  """
  base = canonical_args(args) or 'default'
  text = base + ''.join('__' + s for s in experiment_sets(sets))
  name = re.sub(r'[^A-Za-z0-9_.+-]', '-', text.replace('=', '-').replace(',', '_'))
  if len(name) > MAX_SLUG:  # keep a readable head and a hash of the whole
    name = name[:MAX_SLUG - 13] + '__' + hashlib.sha256(name.encode()).hexdigest()[:11]
  return name


def check_name(name: str, what: str = 'arm') -> str:
  """A study or arm name: a short folder name of letters, digits and `._-`."""
  if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.+-]*', name or '') or len(name) > MAX_NAME:
    raise ValueError(f'{what} name {name!r}: at most {MAX_NAME} characters of letters, digits '
                     'and ._+- (name it with --study / --arm)')
  return name


def read_manifest(study_dir: str) -> dict | None:
  """The manifest.json of a study folder (None without one)."""
  return _read_json(os.path.join(study_dir, MANIFEST))


def check_arm(root: str, study: str, arm: str, *, config: str, args: str,
              sets: Sequence[str]) -> dict | None:
  """Raises ValueError unless `arm` may hold this experiment; returns the study's manifest."""
  from superconv import storage  # pylint: disable=g-import-not-at-top
  path = storage.path(root) / check_name(study, 'study') / MANIFEST
  check_name(arm)
  manifest = json.loads(path.read_text()) if path.exists() else None
  have = (manifest or {}).get('arms', {}).get(arm)
  if have is not None and (have['config'], have['args'], sorted(have['set'])) != (
      config, args, sorted(sets)):
    raise ValueError(f'{study}/{arm} already holds another experiment '
                     f"({have['config']}:{have['args']} with {have['set']}): name this one "
                     'with --arm')
  return manifest


def record_arm(root: str, study: str, arm: str, *, config: str, args: str,
               sets: Sequence[str], seed: int, command: str = '') -> dict:
  """Adds `arm` (or its `seed`) to `root/study/manifest.json`, creating it if needed.

  An arm is one experiment: the same arm name with another config, argument or `--set`s is an
  error, not a second experiment in one folder. A new manifest's question is empty until its
  author writes it; its command is the first command that wrote to it.
  """
  from superconv import storage  # pylint: disable=g-import-not-at-top
  manifest = check_arm(root, study, arm, config=config, args=args, sets=sets) or {
      'study': study, 'question': '', 'command': command, 'arms': {}}
  have = manifest['arms'].setdefault(arm, {'config': config, 'args': args, 'set': list(sets),
                                           'seeds': []})
  have['seeds'] = sorted(set(have['seeds']) | {int(seed)})
  path = storage.path(root) / study / MANIFEST
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(manifest, indent=1) + '\n')
  return manifest


@dataclasses.dataclass
class Run:
  """One seed's results folder."""
  path: str
  stem: str                   # the config file's stem
  group: str                  # the arm
  args: str                   # canonical args ('' = the config's default)
  seed: int
  info: dict                  # run.json ({} when the run was not made by experiments.run)
  sets: list[str]             # the experiment-changing `--set key=value`s of the run
  summary: dict | None        # summary.json, None while unfinished
  rows: list[dict]            # metrics.jsonl
  study: str = ''

  @property
  def config(self) -> dict:
    # The trainer's config.json comes first: it holds what actually ran (e.g. LR bounds taken
    # from a range test through `lr_range_result`); run.json's copy is the config before that.
    return _read_json(os.path.join(self.path, 'config.json')) or self.info.get('config') or {}

  @property
  def finished(self) -> bool:
    return self.summary is not None and not self.summary.get('preempted')

  def curve(self, key: str = 'eval_accuracy') -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the metric rows that carry `key`."""
    pts = [(r['step'], r[key]) for r in self.rows if _finite(r.get(key))]
    steps, values = zip(*pts) if pts else ((), ())
    return np.asarray(steps, np.int64), np.asarray(values, np.float64)

  def final_accuracy(self) -> float | None:
    s = self.summary or {}
    if _finite(s.get('final_eval_accuracy')):
      return float(s['final_eval_accuracy'])
    _, acc = self.curve()
    return float(acc[-1]) if acc.size else None

  def best_accuracy(self) -> float | None:
    s = self.summary or {}
    if _finite(s.get('best_eval_accuracy')):
      return float(s['best_eval_accuracy'])
    _, acc = self.curve()
    return float(acc.max()) if acc.size else None


@dataclasses.dataclass
class Group:
  """All seeds of one (study, arm)."""
  stem: str
  group: str
  runs: list[Run]
  study: str = ''

  @property
  def args(self) -> str:
    return self.runs[0].args

  @property
  def name(self) -> str:
    """'study/arm', the folder under results/ (the config and its overrides are in the
    manifest and in each run's run.json)."""
    return f'{self.study}/{self.group}' if self.study else self.group

  @property
  def folder(self) -> str:
    return os.path.dirname(self.runs[0].path)

  @property
  def finished(self) -> list[Run]:
    return [r for r in self.runs if r.finished]

  @property
  def config(self) -> dict:
    return self.runs[0].config

  def matches(self, stem: str, args: str) -> bool:
    """Whether this group ran configs/<stem>.py:<args>: same resolved experiment (so
    'policy=clr' and '' match when clr is the default), else the same canonical args."""
    if stem != self.stem:
      return False
    want = resolve(stem, canonical_args(args))
    if want is not None and self.config:
      return json.dumps(experiment_view(with_defaults(self.config)), sort_keys=True) == want
    return canonical_args(args) == self.args and not self.runs[0].sets

  def stat(self, fn) -> tuple[float, float, int]:
    """(mean, sample std, n) of fn(run) over finished runs (std 0 for one run)."""
    vals = [v for v in (fn(r) for r in self.finished) if v is not None]
    if not vals:
      return math.nan, math.nan, 0
    return (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
            len(vals))

  def mean_curve(self, key: str = 'eval_accuracy', runs: Sequence[Run] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std) over seeds at the steps every seed logged."""
    curves = [r.curve(key) for r in (runs if runs is not None else self.runs)]
    curves = [c for c in curves if c[0].size]
    if not curves:
      empty = np.zeros(0)
      return empty.astype(np.int64), empty, empty
    common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves)))
    table = np.asarray([[dict(zip(s.tolist(), v.tolist()))[t] for t in common]
                        for s, v in curves])
    std = table.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(common))
    return np.asarray(common, np.int64), table.mean(axis=0), std


def seed_stats(values: Sequence[float]) -> dict:
  """n, mean, sample std (0 for one value), min, max and the values, of the finite ones.

  Examples:
    >>> seed_stats([0.5, None, 0.7])['n'], round(seed_stats([0.5, 0.7])['std'], 4)
    (2, 0.1414)
  """
  v = [float(x) for x in values if x is not None and math.isfinite(x)]
  if not v:
    return {'n': 0}
  return {'n': len(v), 'mean': float(np.mean(v)), 'std': float(np.std(v, ddof=1)) if len(v) > 1
          else 0.0, 'min': min(v), 'max': max(v), 'values': v}


def steps_to_reach(group: Group, target: float) -> int | None:
  """First evaluated step where the seed-mean eval accuracy is >= target (None: never).

  Examples:
    >>> r = Run('', 'x', 'g', '', 0, {}, [], {}, [{'step': 10, 'eval_accuracy': 0.5},
    ...                                       {'step': 20, 'eval_accuracy': 0.9}])
    >>> steps_to_reach(Group('x', 'g', [r]), 0.8), steps_to_reach(Group('x', 'g', [r]), 0.95)
    (20, None)
  """
  steps, mean, _ = group.mean_curve(runs=group.finished or group.runs)
  hit = np.nonzero(mean >= target - 1e-12)[0]
  return int(steps[hit[0]]) if hit.size else None


def epochs_per_step(group: Group) -> float | None:
  """Passes over the training set per update (batch / training examples), from the config."""
  c = group.config
  if not c:
    return None
  data = c.get('data', {})
  spec = sources.SPECS.get(data.get('name'))
  n = data.get('train_subset') or (spec.train_size if spec else None) or None
  return c['batch_size'] / n if n else None


def speedup(baseline: Group, fast: Group) -> dict[str, Any]:
  """Iterations the baseline needed for its final mean accuracy vs. those `fast` needed.

  ratio = (baseline's last step) / (first step where fast's mean accuracy >= that value).
  Also the other way round (where the baseline first reached `fast`'s final accuracy), and
  epochs per update of both, since the two may use different batch sizes.
  """
  target, _, n = baseline.stat(lambda r: r.final_accuracy())
  base_steps = max((int(r.curve()[0][-1]) for r in baseline.finished if r.curve()[0].size),
                   default=None)
  reached = steps_to_reach(fast, target) if n else None
  fast_target, _, m = fast.stat(lambda r: r.final_accuracy())
  fast_steps = max((int(r.curve()[0][-1]) for r in fast.finished if r.curve()[0].size),
                   default=None)
  return {'baseline': baseline.name, 'fast': fast.name, 'target': target,
          'baseline_steps': base_steps, 'fast_steps': reached,
          'ratio': base_steps / reached if reached and base_steps else None,
          'fast_final': fast_target if m else None, 'fast_total_steps': fast_steps,
          'baseline_reaches_fast_final': steps_to_reach(baseline, fast_target) if m else None,
          'baseline_epochs_per_step': epochs_per_step(baseline),
          'fast_epochs_per_step': epochs_per_step(fast)}


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def committed_results(tmp_root: str, repo: str = REPO) -> str | None:
  """`experiments/results` as git's index holds it, checked out under `tmp_root`; None outside a
  git checkout. A run another process is still making in a working tree is not a result until
  it is committed."""
  import subprocess  # pylint: disable=g-import-not-at-top
  try:
    files = subprocess.run(['git', 'ls-files', '-z', '--', 'experiments/results'], cwd=repo,
                           capture_output=True, check=True).stdout
    if not files:
      return None
    subprocess.run(['git', 'checkout-index', '-z', '--stdin', f'--prefix={tmp_root}/'],
                   input=files, cwd=repo, check=True, capture_output=True)
  except (OSError, subprocess.CalledProcessError):
    return None
  return os.path.join(tmp_root, 'experiments', 'results')


def load_runs(root: str, studies: Sequence[str] | None = None) -> list[Run]:
  """Every seed folder of every arm that a study manifest under `root` names (of `studies`
  only, when given)."""
  runs = []
  for manifest_path in sorted(glob.glob(os.path.join(root, '*', MANIFEST))):
    study_dir = os.path.dirname(manifest_path)
    study = os.path.basename(study_dir)
    if studies is not None and study not in studies:
      continue
    for arm, spec in _read_json(manifest_path)['arms'].items():
      stem = os.path.splitext(os.path.basename(spec.get('config') or ''))[0]
      for path in sorted(glob.glob(os.path.join(study_dir, arm, 'seed*'))):
        seed_match = re.fullmatch(r'seed(\d+)', os.path.basename(path))
        if not seed_match or not os.path.isdir(path):
          continue
        info = _read_json(os.path.join(path, 'run.json')) or {}
        summary = _read_json(os.path.join(path, 'summary.json'))
        rows = _read_jsonl(os.path.join(path, 'metrics.jsonl'))
        if not (info or summary or rows):
          continue
        runs.append(Run(path=path, stem=stem, group=arm,
                        args=canonical_args(info.get('args', spec.get('args', ''))),
                        seed=int(seed_match.group(1)), info=info,
                        sets=experiment_sets(info.get('sets', spec.get('set', ()))),
                        summary=summary, rows=rows, study=study))
  return runs


def load_groups(root: str, studies: Sequence[str] | None = None
                ) -> dict[tuple[str, str], Group]:
  """Runs of `root` grouped by (study, arm), seeds sorted."""
  groups: dict[tuple[str, str], Group] = {}
  for run in load_runs(root, studies):
    groups.setdefault((run.study, run.group),
                      Group(run.stem, run.group, [], run.study)).runs.append(run)
  for g in groups.values():
    g.runs.sort(key=lambda r: r.seed)
  return dict(sorted(groups.items()))


def find_group(groups: dict[tuple[str, str], Group], spec: str) -> Group | None:
  """The group that ran 'stem' or 'stem:args' (see `Group.matches`), preferring one
  without experiment-changing `--set`s; 'study/arm' names a results folder exactly."""
  if '/' in spec:
    return groups.get(tuple(spec.split('/', 1)))
  stem, _, args = spec.partition(':')
  matches = [g for g in groups.values() if g.matches(stem, args)]
  matches.sort(key=lambda g: len(g.runs[0].sets))
  return matches[0] if matches else None
