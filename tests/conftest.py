"""Test set-up: four virtual CPU devices, so data-parallel code runs on a real multi-device mesh,
one persistent compilation cache for the whole session, and the two tiers.

Tiers: `python -m pytest` runs the fast tier (unit tests and in-process runs at toy size). Tests
marked `integration` (CLI subprocesses, several processes, emulators, the notebook, real data, the
GPU scripts at toy size) and `slow` run with `python -m pytest -m "integration or slow"`. A test
that uses the `run_cli` fixture, directly or through another fixture, is marked `integration`
here.

The cache: most CLI tests launch `python -m superconv.main` on the same tiny config, and each
launch used to compile the same train and eval steps again (10 s of a 25 s launch on the 2-core
CPU; 2.5 s from the cache). A fresh folder per session, shared with the subprocesses (and the
pytest-xdist workers) through the environment, so nothing stale from another checkout or JAX
version is ever read.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

if os.environ.get('PYTEST_XDIST_WORKER') and os.environ.get('SUPERCONV_TESTS_JAX_CACHE'):
  # A pytest-xdist worker: it inherits the environment of the controller, which ran this file
  # before starting it, so every worker shares the controller's folder (and the controller,
  # the last to exit, removes it).
  _CACHE = os.environ['SUPERCONV_TESTS_JAX_CACHE']
else:
  _CACHE = tempfile.mkdtemp(prefix='superconv-tests-jax-cache-')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ['SUPERCONV_TESTS_JAX_CACHE'] = _CACHE
os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'
# superconv's XLA:CPU defaults (superconv.platform), as the programs set them: before any JAX
# backend starts, and inherited by every CLI subprocess, so all programs a test compares use the
# same kernels.
from superconv import platform  # pylint: disable=g-import-not-at-top

platform.apply_cpu_defaults()

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Must run before any JAX backend starts: every test sees 4 CPU devices.
jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_platforms', 'cpu')
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
SHARED_DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data')
CIFAR10_ARCHIVE = os.path.join(SHARED_DATA, 'cifar10-jpeg.tar.gz')
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'

# tests/data holds committed reference values and the scripts that made them (make_onecycle_torch.py
# needs torch, which the `test` extra does not install): data, not tests.
collect_ignore_glob = ['data/*']

# Left out of a launched program's environment: a test sets it for one launch, never for all.
_CLI_ENV_DROP = ('SUPERCONV_TEST_SIGNAL_AT_STEP',)


def launch(*argv: str, workdir=None, env=None, timeout: float = 300, cwd=None,
        check=None) -> subprocess.CompletedProcess:
  """Runs `python -m superconv.main *argv [--workdir=workdir]` in a new process on the CPU.

  The process inherits the session's environment (the compilation cache, XLA_FLAGS) updated by
  `env`, and gets one CPU device, as a user's run does. `check`: the exit status expected (an int,
  or True for 0); a launch that ends otherwise fails the test with the end of its stderr.
  """
  base = {k: v for k, v in os.environ.items() if k not in _CLI_ENV_DROP}
  full_env = dict(base, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, **(env or {}))
  cmd = [sys.executable, '-m', 'superconv.main', *argv]
  if workdir is not None:
    cmd.append(f'--workdir={workdir}')
  done = subprocess.run(cmd, cwd=ROOT if cwd is None else cwd, env=full_env, capture_output=True,
                        text=True, timeout=timeout)
  if check is not None:
    expected = 0 if check is True else check
    assert done.returncode == expected, (done.returncode, done.stderr[-3000:])
  return done


@pytest.fixture(scope='session')
def run_cli():
  """`launch`, the one way tests start the program; its users are in the integration tier."""
  return launch


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if 'run_cli' in getattr(item, 'fixturenames', ()):
      item.add_marker(pytest.mark.integration)
