r"""Runs one config over several seeds into experiments/results/, resumable and skippable.

  python -m experiments.run --config=configs/resnet56_subset.py \
      --args "policy=clr,samples=10000" --seeds 0 1 2 [--set key=value ...] [--data PATH]

Each seed runs `superconv.train.train_and_evaluate` (or `superconv.lr_range.run` when the
config's mode is 'lr_range') in

  experiments/results/<config stem>/<args slug>/seed<N>/

A seed whose summary.json exists is skipped; an unfinished one resumes from its checkpoint. The
folder gets run.json (config file, args, seed, the resolved config, the command line, git commit,
library versions and hardware), metrics.jsonl and summary.json from the trainer; the checkpoints
are deleted once the seed has finished (only json/png results are committed).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import json
import os
import shlex
import shutil
import sys
from typing import Sequence

import ml_collections

from experiments import collect

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results')


def load_config_module(path: str):
  """Imports a configs/*.py file by path (as ml_collections.config_flags does)."""
  name = '_experiment_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise FileNotFoundError(f'cannot load a config from {path!r}')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def apply_sets(config: ml_collections.ConfigDict, sets: Sequence[str]) -> None:
  """`key.sub=value` overrides, values as Python literals (like `--config.key.sub=value`)."""
  for item in sets:
    key, sep, text = item.partition('=')
    if not sep:
      raise ValueError(f'--set {item!r}: expected key=value')
    try:
      value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
      value = text.strip()
    *parents, leaf = key.strip().split('.')
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(f'--set {item!r}: the config has no field {key!r}')
    node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value


def build_config(config_path: str, args: str, seed: int, sets: Sequence[str] = (),
                 data: str = '') -> ml_collections.ConfigDict:
  """The config file's `get_config(args)`, then the seed, local data and `--set`s."""
  config = load_config_module(config_path).get_config(args)
  config.seed = int(seed)  # locked configs still accept new values for existing fields
  if data:
    config.data.source, config.data.path = 'files', data
  apply_sets(config, sets)
  return config


def run_dir(root: str, config_path: str, args: str, seed: int, sets: Sequence[str] = ()) -> str:
  stem = os.path.splitext(os.path.basename(config_path))[0]
  return os.path.join(root, stem, collect.slug(args, sets), f'seed{seed}')


def _versions() -> dict:
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  out = {}
  for pkg in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'ml-collections', 'numpy',
              'tensorflow-datasets'):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  return out


def range_test_files(result, workdir: str) -> dict:
  """metrics.jsonl and summary.json for an LR range test, in the trainer's format, so tables
  and plots read sweeps and training runs alike (lr_range.json keeps everything else).

  A range test's "final" accuracy is the one at the top of the sweep (or where it stopped).
  """
  from superconv import metrics  # pylint: disable=g-import-not-at-top
  rows = [{'step': int(st), 'lr': float(lr), 'eval_accuracy': float(acc), 'eval_loss': float(loss)}
          for st, lr, acc, loss in zip(result.eval_steps, result.eval_lrs, result.eval_accuracy,
                                       result.eval_loss)]
  writer = metrics.MetricWriter(os.path.join(workdir, 'metrics.jsonl'))  # starts it empty
  for row in rows:
    writer.write(row)
  accs = [r['eval_accuracy'] for r in rows]
  best = max(range(len(accs)), key=lambda i: accs[i] if accs[i] == accs[i] else -1.0,
             default=None)
  summary = {
      'final_eval_accuracy': accs[-1] if accs else None,
      'best_eval_accuracy': accs[best] if best is not None else None,
      'best_step': rows[best]['step'] if best is not None else None,
      'best_lr': rows[best]['lr'] if best is not None else None,
      'steps': len(result.lrs), 'diverged_at': result.diverged_at,
      'suggestion': result.suggestion, 'wall_seconds': result.wall_seconds,
      **metrics.provenance(),
  }
  metrics.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def run_seed(config_path: str, args: str, seed: int, *, sets: Sequence[str] = (),
             data: str = '', root: str = RESULTS, command: str = '') -> dict:
  """Runs (or skips, or resumes) one seed; returns its summary."""
  from superconv import metrics  # pylint: disable=g-import-not-at-top
  workdir = run_dir(root, config_path, args, seed, sets)
  summary_path = os.path.join(workdir, 'summary.json')
  if os.path.exists(summary_path):
    print(f'[experiments.run] {workdir}: summary.json exists, skipped.', flush=True)
    with open(summary_path) as f:
      return json.load(f)
  config = build_config(config_path, args, seed, sets, data)
  os.makedirs(workdir, exist_ok=True)
  info = {
      'config_file': os.path.relpath(os.path.abspath(config_path), os.path.dirname(HERE)),
      'args': args, 'seed': seed, 'sets': list(sets), 'data': data,
      'command': command or ' '.join(shlex.quote(a) for a in sys.argv),
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'versions': _versions(), 'hardware': metrics.provenance(),
      'config': config.to_dict(),
  }
  info['git_commit'] = info['hardware'].get('git_commit', 'unknown')
  metrics.write_json(os.path.join(workdir, 'run.json'), info)
  print(f'[experiments.run] {workdir}: running {info["config_file"]}:{args} seed {seed}.',
        flush=True)
  from superconv import train  # pylint: disable=g-import-not-at-top
  try:
    if config.mode == 'lr_range':
      from superconv import lr_range  # pylint: disable=g-import-not-at-top
      summary = range_test_files(lr_range.run(config, workdir), workdir)
    else:
      summary = train.train_and_evaluate(config, workdir)
  except train.TrainingDiverged as e:
    # A result, not a crash (e.g. weight decay 1e-3 at LR 3): record it so that the tables
    # show it and a rerun does not retry it.
    print(f'[experiments.run] {workdir}: diverged: {e}', flush=True)
    summary = {'diverged': True, 'error': str(e), **metrics.provenance()}
    metrics.write_json(summary_path, summary)
  if isinstance(summary, dict) and summary.get('preempted'):
    return summary  # keep the checkpoints: the same command resumes
  if not os.path.exists(summary_path):  # a runner that returns but does not write one
    metrics.write_json(summary_path, summary if isinstance(summary, dict) else {})
  shutil.rmtree(os.path.join(workdir, 'checkpoints'), ignore_errors=True)
  with open(summary_path) as f:
    return json.load(f)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m experiments.run', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='a configs/*.py file')
  parser.add_argument('--args', default='', help='the config argument, e.g. "policy=clr"')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--set', dest='sets', action='append', default=[], metavar='KEY=VALUE',
                      help='override a config field, e.g. --set num_steps=100 (repeatable)')
  parser.add_argument('--data', default='', help='local data file or folder (source=files)')
  parser.add_argument('--results', default=RESULTS, help='results root folder')
  ns = parser.parse_args(argv)
  command = 'python -m experiments.run ' + ' '.join(
      shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
  for seed in ns.seeds:
    summary = run_seed(ns.config, ns.args, seed, sets=ns.sets, data=ns.data, root=ns.results,
                       command=command)
    if summary.get('preempted'):
      print('[experiments.run] preempted; run the same command again to resume.', flush=True)
      return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
