"""The evaluation program: a workdir's latest checkpoint on the test split, no training.

  python -m superconv.main --config=configs/resnet56.py --workdir=runs/resnet56 --config.mode=eval

The config must be the one the run trained with (model, optimizer: the checkpoint restores into
that state). Writes workdir/eval.json ({step, eval_loss, eval_accuracy, eval_examples} and
provenance) and prints it as one line; the numbers equal the run's own evaluation at that
update (the same evaluator on the same weights and BN statistics).
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from superconv import checkpoint as ckpt_lib
from superconv import metrics as metrics_lib
from superconv import setup as setup_lib
from superconv import workdir as workdir_lib

EVAL_FILE = 'eval.json'


def evaluate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict:
  """Restores `workdir`'s latest checkpoint of `config`'s run and evaluates it; returns the row.

  Raises:
    CheckpointError: the workdir has no checkpoint (or none that fits this config).
  """
  with workdir_lib.claim(config, workdir, check_identity=False):  # one writer at a time
    return _evaluate(config, workdir, devices)


def _evaluate(config: ml_collections.ConfigDict, workdir: str, devices) -> dict:
  setup = setup_lib.build(config, workdir, devices=devices)
  checkpointer = setup.checkpointer
  try:
    if not checkpointer.steps():
      raise ckpt_lib.CheckpointError(
          f'{checkpointer.directory} holds no checkpoint to evaluate: train first (the same '
          'command without --config.mode=eval), or point --workdir at a trained run.')
    state, step = checkpointer.restore_latest(setup.abstract_state())
  finally:
    checkpointer.close()
  evaluator = setup.inputs.evaluator(setup.model, setup.mesh, setup.spec)
  row = {'step': int(step), **evaluator(state)}
  metrics_lib.write_json(os.path.join(workdir, EVAL_FILE), {**row, **metrics_lib.provenance()})
  if jax.process_index() == 0:
    print(json.dumps(row), flush=True)
  return row
