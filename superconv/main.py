r"""The superconv command line.

  python -m superconv.main --config=configs/resnet56.py --workdir=/tmp/resnet56
  python -m superconv.main --config=configs/resnet56.py:smoke --workdir=/tmp/smoke
  python -m superconv.main --config=configs/resnet56_lr_range.py --workdir=/tmp/range \
      --config.lr_range.num_steps=20000

Running the same command on the same workdir resumes from its latest checkpoint.
"""

import logging as pylogging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics and summaries.')
config_flags.DEFINE_config_file('config', None, 'A configs/*.py file, optionally :ARG.',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


# What `jax.distributed.initialize()` raises when none of JAX's cluster detectors (Cloud TPU
# metadata, GKE, SLURM, Open MPI, Kubernetes) recognises the environment: a single-process run.
_NO_CLUSTER = 'coordinator_address should be defined'


def initialize_distributed(dist) -> bool:
  """Joins a multi-process job; returns whether `jax.distributed` was initialised.

  'auto' lets JAX detect the cluster (a Cloud TPU pod slice through its metadata server, GKE,
  SLURM, Open MPI) and runs as one process where it finds none; 'always' requires a cluster or
  an address; 'never' skips it. `coordinator_address` (+ `num_processes`, `process_id`) from the
  config always initialise, as on a GPU cluster without a scheduler.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if dist.initialize == 'never':
    return False
  kwargs = {}
  if dist.coordinator_address:
    kwargs = dict(coordinator_address=dist.coordinator_address,
                  num_processes=dist.num_processes or None,
                  process_id=None if dist.process_id < 0 else dist.process_id)
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:
    if dist.initialize == 'auto' and not kwargs and _NO_CLUSTER in str(e):
      return False
    raise
  return True


class _QuietLibraries(pylogging.Filter):
  """Keeps orbax's per-save INFO chatter out of the run log; its warnings still show."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or 'orbax' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = FLAGS.config
  initialize_distributed(config.distributed)
  import jax  # pylint: disable=g-import-not-at-top
  from superconv import config_checks  # pylint: disable=g-import-not-at-top
  from superconv import train  # pylint: disable=g-import-not-at-top
  from superconv.data.sources import DataError  # pylint: disable=g-import-not-at-top
  logging.info('JAX %s: process %d of %d, %d local / %d global devices (%s).', jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].device_kind)
  try:
    if config.mode == 'lr_range':
      from superconv import lr_range  # pylint: disable=g-import-not-at-top
      lr_range.run(config, FLAGS.workdir)
    else:
      train.train_and_evaluate(config, FLAGS.workdir)
  except (config_checks.ConfigError, DataError, train.ckpt_lib.CheckpointError,
          train.TrainingDiverged) as e:
    print(f'superconv: {e}', file=sys.stderr)
    sys.exit(3 if isinstance(e, train.TrainingDiverged) else 2)


def _condense(message: str) -> str:
  """A flag error in one or two lines: config_flags embeds a whole traceback in its message."""
  lines = [l.strip() for l in message.splitlines() if l.strip()]
  if any(l.startswith('Traceback') for l in lines):
    lines = [lines[0], lines[-1]]  # 'flag --config=...: Error whilst parsing' and the exception
  return ' '.join(lines)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every config mistake reported like a ConfigError: one line, exit 2.

  A mistyped field (`--config.schedule.max_lrr=2`) reaches us as ml_collections' KeyError
  (wrapped in an AttributeError), not as a flags.Error, and would otherwise end in a traceback.
  """
  try:
    return FLAGS(argv)
  except flags.Error as e:
    message = _condense(str(e))
  except (AttributeError, KeyError) as e:
    while e.args and isinstance(e.args[0], BaseException):  # unwrap AttributeError(KeyError(..))
      e = e.args[0]
    text = str(e.args[0] if e.args else e)
    key = text.split("'")[1] if text.count("'") >= 2 else ''
    bad = [a.split('=', 1)[0] for a in argv[1:]
           if a.startswith('--config.') and key and key in a.split('=', 1)[0].split('.')]
    message = (f'{", ".join(bad) or "a --config override"}: no such config field '
               f'({" ".join(text.split())}).')
  print(f'superconv: {message}\nPass --helpshort or --helpfull to see the flags; '
        'configs/default.py lists every config field.', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
