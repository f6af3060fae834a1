"""`--config.mode=eval`: a workdir's latest checkpoint evaluated without training, with the same
numbers as the run's own last evaluation."""

from __future__ import annotations

import json
import os

from configs import resnet56
from superconv import programs


def test_eval_mode_reproduces_the_runs_last_evaluation(tmp_path):
  workdir = str(tmp_path / 'run')
  config = resnet56.get_config('tiny')
  config.progress_bar = False
  programs.run(config, workdir)
  last = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))][-1]
  config.mode = 'eval'
  row = programs.run(config, workdir)
  assert row['step'] == last['step'] == 8
  assert row['eval_accuracy'] == last['eval_accuracy']
  assert row['eval_loss'] == last['eval_loss']
  assert row['eval_examples'] == last['eval_examples'] == 100
  saved = json.load(open(os.path.join(workdir, 'eval.json')))
  assert saved['eval_accuracy'] == row['eval_accuracy'] and 'git_commit' in saved


def test_eval_mode_without_a_checkpoint_says_so(run_cli, tmp_path):
  done = run_cli('--config=configs/resnet56.py:tiny', '--config.mode=eval', workdir=tmp_path)
  assert done.returncode == 2, done.stderr[-2000:]
  assert 'holds no checkpoint to evaluate' in done.stderr
