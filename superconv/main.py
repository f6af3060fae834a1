r"""The superconv command line.

  python -m superconv.main --config=configs/resnet56.py --workdir=/tmp/resnet56
  python -m superconv.main --config=configs/resnet56.py:smoke --workdir=/tmp/smoke
  python -m superconv.main --config=configs/resnet56_lr_range.py --workdir=/tmp/range \
      --config.lr_range.num_steps=20000

Running the same command on the same workdir resumes from its latest checkpoint; a workdir
holds one run (its config.json) and one writer at a time. Exit codes: 0 done (or preempted
after saving), 2 a config, data, workdir or checkpoint problem (one line on stderr), 3 the run
diverged, 130 stopped by a second Ctrl-C without saving.
"""

import logging as pylogging
import sys

from absl import app
from absl import flags
from absl import logging

from superconv import platform
from superconv import programs

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics and summaries.')
programs.define_config_flag()
flags.declare_key_flag('config')  # listed by --help beside --workdir
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(pylogging.Filter):
  """Keeps orbax's per-save INFO chatter out of the run log; its warnings still show."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or 'orbax' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if not FLAGS.workdir:
    print('superconv: --workdir is empty; name the folder of the run (a path or gs://bucket/run).',
          file=sys.stderr)
    sys.exit(2)
  config = FLAGS.config
  # JAX is imported only now, after the flags parsed: a mistyped flag costs no JAX start-up;
  # XLA reads its flags when JAX starts, so the CPU defaults go in first.
  platform.apply_cpu_defaults()
  import jax  # pylint: disable=g-import-not-at-top
  from superconv import sharding  # pylint: disable=g-import-not-at-top
  sharding.initialize_distributed(config.distributed)
  logging.info('JAX %s: process %d of %d, %d local / %d global devices (%s).', jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].device_kind)
  try:
    programs.run(config, FLAGS.workdir)
  except programs.user_errors() as e:
    print(f'superconv: {e}', file=sys.stderr)
    sys.exit(programs.exit_code(e))
  except KeyboardInterrupt:  # the second Ctrl-C: the workdir's lock is already released
    print('superconv: stopped by a second interrupt without saving; the same command resumes '
          'from the last checkpoint.', file=sys.stderr)
    sys.exit(130)


if __name__ == '__main__':
  app.run(main, flags_parser=programs.parse_flags)
