r"""Runs one config over several seeds into experiments/results/, resumable and skippable.

  python -m experiments.run --config=configs/resnet56_subset.py \
      --args "policy=clr,samples=10000" --seeds 0 1 2 [--set key=value ...] [--data PATH] \
      [--study NAME] [--arm NAME]

Each seed runs its config's program through `superconv.programs.run`, as `python -m
superconv.main` would (the same config loader, overrides, resolution and program table), in

  experiments/results/<study>/<arm>/seed<N>/

and the study's manifest.json records the arm (config, argument, `--set`s, seeds;
`experiments.collect.record_arm`). The study defaults to the config's stem and the arm to the
override slug (`policy-clr_samples-10000`); a slug over 48 characters must be named. A seed
whose summary.json exists is skipped; an unfinished one resumes from its checkpoint. The folder
gets run.json (config file, args, seed, the resolved config, the command line, git commit,
library versions and hardware), metrics.jsonl, summary.json and TensorBoard event files from the
trainer, and the final checkpoint (`--drop-checkpoints` deletes it; checkpoints are never
committed): `--config.mode=eval` evaluates it again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from typing import Sequence

from absl import flags
import ml_collections

from experiments import collect
from superconv import platform
from superconv import programs

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results')


def build_config(config_path: str, args: str, seed: int, sets: Sequence[str] = (),
                 data: str = '') -> ml_collections.ConfigDict:
  """The config file's `get_config(args)`, then the seed, local data and `--set`s.

  Loaded and overridden exactly as `python -m superconv.main --config=FILE:ARGS --config.K=V`
  does (`programs.load_config`): a `--set` value is typed by its field, an unknown field fails.
  """
  overrides = [f'seed={int(seed)}']
  if data:
    overrides += ['data.source=files', f'data.path={data}']
  for item in sets:
    if '=' not in item:
      raise ValueError(f'--set {item!r}: expected key=value')
    overrides.append(item.strip())
  try:
    return programs.load_config(config_path, args, overrides)
  except (AttributeError, KeyError, flags.Error) as e:  # a mistyped --set, in one line
    argv = ['', *(f'--config.{o}' for o in overrides)]
    raise ValueError(f'--set: {programs.flag_error_message(argv, e)}') from None


def run_dir(root: str, config_path: str, args: str, seed: int, sets: Sequence[str] = (),
            study: str = '', arm: str = '') -> str:
  """root/<study>/<arm>/seed<N>: by default the config's stem and the override slug."""
  study = study or os.path.splitext(os.path.basename(config_path))[0]
  arm = arm or collect.slug(args, sets)
  return os.path.join(root, collect.check_name(study, 'study'), collect.check_name(arm),
                      f'seed{seed}')


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


def run_seed(config_path: str, args: str, seed: int, *, sets: Sequence[str] = (),
             data: str = '', root: str = RESULTS, command: str = '',
             keep_checkpoint: bool = True, study: str = '', arm: str = '') -> dict:
  """Runs (or skips, or resumes) one seed; returns its summary.

  A finished seed keeps its final checkpoint (the trained model: `--config.mode=eval` on the
  folder evaluates it; checkpoints are not committed, see .gitignore), or none without
  `keep_checkpoint`.
  """
  # pylint: disable=g-import-not-at-top
  from superconv import metrics
  from superconv import storage  # `root` may be an object store (gs://bucket/results)
  # pylint: enable=g-import-not-at-top
  workdir = run_dir(root, config_path, args, seed, sets, study, arm)
  config_file = os.path.relpath(os.path.abspath(config_path), os.path.dirname(HERE))
  command = command or ' '.join(shlex.quote(a) for a in sys.argv)
  summary_path = os.path.join(workdir, 'summary.json')
  if storage.path(summary_path).exists():
    print(f'[experiments.run] {workdir}: summary.json exists, skipped.', flush=True)
    return json.loads(storage.path(summary_path).read_text())
  config = build_config(config_path, args, seed, sets, data)
  study_dir, arm = os.path.split(os.path.dirname(workdir))
  collect.record_arm(root, os.path.basename(study_dir), arm, config=config_file, args=args,
                     sets=sets, seed=seed, command=command)
  storage.makedirs(workdir)
  info = {
      'config_file': config_file,
      'args': args, 'seed': seed, 'sets': list(sets), 'data': data,
      'command': command,
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'versions': _versions(), 'hardware': metrics.provenance(),
      'config': config.to_dict(),
  }
  info['git_commit'] = info['hardware'].get('git_commit', 'unknown')
  metrics.write_json(os.path.join(workdir, 'run.json'), info)
  print(f'[experiments.run] {workdir}: running {info["config_file"]}:{args} seed {seed}.',
        flush=True)
  from superconv import step  # pylint: disable=g-import-not-at-top
  try:
    summary = programs.run(config, workdir)
    if not isinstance(summary, dict):  # a range test returns its RangeTestResult
      summary = summary.summary_dict()
  except step.TrainingDiverged as e:
    # A result, not a crash (e.g. weight decay 1e-3 at LR 3): record it so that the tables
    # show it and a rerun does not retry it.
    print(f'[experiments.run] {workdir}: diverged: {e}', flush=True)
    summary = {'diverged': True, 'error': str(e), **metrics.provenance()}
    metrics.write_json(summary_path, summary)
  if isinstance(summary, dict) and summary.get('preempted'):
    return summary  # keep the checkpoints: the same command resumes
  if not storage.path(summary_path).exists():  # a runner that returns but does not write one
    metrics.write_json(summary_path, summary if isinstance(summary, dict) else {})
  # A diverged run's last good checkpoint is no trained model: not kept.
  _prune_checkpoints(storage.path(workdir) / 'checkpoints',
                     keep_final=keep_checkpoint and not summary.get('diverged'))
  return json.loads(storage.path(summary_path).read_text())


def _prune_checkpoints(directory, *, keep_final: bool) -> None:
  """Deletes every checkpoint of a finished seed but its final one (all of them without
  `keep_final`). `directory`: an epath path (a disk or a bucket)."""
  try:
    if not directory.exists():
      return
    if not keep_final:
      directory.rmtree(missing_ok=True)
      return
    steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())
    for step in steps[:-1]:
      (directory / str(step)).rmtree(missing_ok=True)
  except OSError:  # a checkpoint folder that cannot be deleted does not fail a finished seed
    pass


def main(argv: Sequence[str] | None = None) -> int:
  platform.apply_cpu_defaults()  # before JAX starts its backends, as superconv.main does
  parser = argparse.ArgumentParser(prog='python -m experiments.run', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='a configs/*.py file')
  parser.add_argument('--args', default='', help='the config argument, e.g. "policy=clr"')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0])
  parser.add_argument('--set', dest='sets', action='append', default=[], metavar='KEY=VALUE',
                      help='override a config field, e.g. --set num_steps=100 (repeatable)')
  parser.add_argument('--data', default='', help='local data file or folder (source=files)')
  parser.add_argument('--results', default=RESULTS, help='results root folder')
  parser.add_argument('--study', default='', help='the study folder (default: the config stem)')
  parser.add_argument('--arm', default='',
                      help='the arm folder in the study (default: the override slug)')
  parser.add_argument('--drop-checkpoints', action='store_true',
                      help="delete each seed's checkpoints once it has finished (default: keep "
                      'the final one, the trained model)')
  ns = parser.parse_args(argv)
  command = 'python -m experiments.run ' + ' '.join(
      shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
  try:  # the user's mistakes, before anything runs: names, fields, another arm's experiment
    workdir = run_dir(ns.results, ns.config, ns.args, ns.seeds[0], ns.sets, ns.study, ns.arm)
    build_config(ns.config, ns.args, ns.seeds[0], ns.sets, ns.data)
    study_dir, arm = os.path.split(os.path.dirname(workdir))
    collect.check_arm(ns.results, os.path.basename(study_dir), arm, config=os.path.relpath(
        os.path.abspath(ns.config), os.path.dirname(HERE)), args=ns.args, sets=ns.sets)
  except (ValueError, OSError) as e:
    print(f'superconv: {e}', file=sys.stderr)
    return 2
  for seed in ns.seeds:
    summary = run_seed(ns.config, ns.args, seed, sets=ns.sets, data=ns.data, root=ns.results,
                       command=command, keep_checkpoint=not ns.drop_checkpoints,
                       study=ns.study, arm=ns.arm)
    if summary.get('preempted'):
      print('[experiments.run] preempted; run the same command again to resume.', flush=True)
      return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
