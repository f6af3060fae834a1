"""Checkpoints in `workdir/checkpoints` with orbax, and the preemption signal handler.

Orbax writes each step into a temporary folder and renames it when complete, so a run killed while
saving leaves no half-written step behind under its final name. A step folder can still be damaged
afterwards (disk full, a copy cut short); `restore_latest` then falls back to the previous one, says
so, and moves the unreadable step to `workdir/checkpoints_unreadable/` (kept for inspection; left in
place, it would block the resumed run from saving that step again).

The workdir may be an object store (`gs://bucket/run`): orbax takes the same `epath` path and
writes the arrays through tensorstore's own GCS driver. GCS has no rename, so there orbax marks a
complete step with a `commit_success.txt` file instead, which `all_steps()` checks; set-aside
steps are copied object by object (`storage.move`).
"""

from __future__ import annotations

import contextlib
import gc
import logging as pylogging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from absl import logging
from flax import traverse_util
import jax
import orbax.checkpoint as ocp

from superconv import storage


class CheckpointError(RuntimeError):
  """The workdir holds checkpoints, but none can be restored into this config."""


class Checkpointer:
  """Saves and restores the whole TrainState (it holds the step, the RNG and the metric sums)."""

  def __init__(self, workdir: str, *, keep: int = 3):
    directory = os.path.join(workdir, 'checkpoints')
    self.directory = storage.path(
        directory if storage.is_object_store(directory) else os.path.abspath(directory))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max(keep, 1), create=True, enable_async_checkpointing=False),
        # One item per step, declared up front: left to infer it, the manager switches to
        # multi-item mode after meeting a step folder whose item is missing, and then fails
        # to read every other step too.
        item_handlers=ocp.StandardCheckpointHandler())

  def save(self, step: int, state: Any) -> None:
    self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_latest(self, abstract_state: Any) -> tuple[Any, int] | tuple[None, None]:
    """Restores the newest readable checkpoint; (None, None) when there is none.

    `abstract_state` (from `jax.eval_shape`, with shardings) fixes shapes, dtypes and placement.
    Unreadable steps newer than the restored one are moved to `checkpoints_unreadable/`.

    Raises:
      CheckpointError: there are checkpoints but none of them restores.
    """
    unreadable = []
    found = None, None
    with _quiet_failed_reads():
      for step in reversed(self.steps()):
        try:
          found = self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state)), step
          break
        except Exception as e:  # pylint: disable=broad-except
          # Any failure to read a step (missing files, truncated arrays, wrong structure) means
          # that step is unusable; an older one is better than starting from scratch.
          logging.warning('Checkpoint at step %d in %s is unreadable (%s: %s); trying the previous '
                          'one.', step, self.directory, type(e).__name__,
                          str(e).splitlines()[0][:200])
          unreadable.append(step)
          last_error = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
    if unreadable and found[0] is None:
      if self._has_plain_ema_batch_stats(unreadable[0]):
        raise CheckpointError(
            f'the checkpoints in {self.directory} were written before superconv kept BatchNorm '
            "running statistics as Caffe's decayed sums (batch_stats mean/var, now mean_sum/"
            'var_sum/count), and cannot be resumed exactly: use a new --workdir.')
      # Not one step restores: more likely the config changed (another model, optimizer or
      # dtype) than every file rotted. Starting over would silently discard the run.
      raise CheckpointError(
          f'none of the checkpoints {unreadable} in {self.directory} can be restored into this '
          f'config ({last_error}). If the config changed on purpose, use a new --workdir; if the '
          f'files are damaged, move {self.directory} away to start from scratch.')
    if unreadable:
      self._set_aside(unreadable)
    return found

  def _has_plain_ema_batch_stats(self, step: int) -> bool:
    """True if `step` holds the BN layout of before Caffe's estimator ('mean'/'var' leaves).

    Not migrated: a plain EMA started at (0, 1) cannot be turned into Caffe's sums and count
    without knowing the batch statistics it mixed, so a resumed run would not be exact.
    """
    try:
      tree = self._manager.item_metadata(step).tree
    except Exception:  # pylint: disable=broad-except
      return False
    stats = tree.get('batch_stats') if isinstance(tree, dict) else None
    if not isinstance(stats, dict):
      return False
    leaves = [path[-1] for path in traverse_util.flatten_dict(stats)]
    return 'mean' in leaves and 'count' not in leaves

  def _set_aside(self, steps: list[int]) -> None:
    """Moves unreadable step folders out of the way, so the resumed run can save those steps."""
    if jax.process_index() == 0:
      aside = storage.makedirs(self.directory.parent / 'checkpoints_unreadable')
      for step in steps:
        target = aside / f'{step}.{time.strftime("%Y%m%d-%H%M%S")}'
        storage.move(self.directory / str(step), target)
        logging.warning('Moved the unreadable checkpoint of step %d to %s.', step, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('superconv_checkpoints_set_aside')
    self._manager.reload()

  def close(self) -> None:
    self._manager.close()


@contextlib.contextmanager
def _quiet_failed_reads():
  """Silences the echo of a failed orbax restore; the warning above is the one message.

  Orbax reads a step's arrays concurrently. When one read fails, the callbacks of the others land
  on an event loop that is already closed, and each would print an 'Event loop is closed'
  traceback (as an unraisable exception) and an asyncio 'exception was never retrieved' error:
  dozens of tracebacks that say nothing more than the warning.
  """
  hook = sys.unraisablehook
  asyncio_logger = pylogging.getLogger('asyncio')
  level = asyncio_logger.level
  sys.unraisablehook = lambda unraisable: None
  asyncio_logger.setLevel(pylogging.CRITICAL)
  try:
    yield
  finally:
    gc.collect()  # the abandoned reads' tasks report now, while their messages are filtered
    sys.unraisablehook = hook
    asyncio_logger.setLevel(level)


# Test hook: 'N:SIGINT' (or N:SIGTERM) makes the run signal itself right after update N, so a test
# lands a preemption on an exact update through the real handler (`PreemptionFlag.test_hook`).
# Unset in real runs.
SIGNAL_AT_STEP_ENV = 'SUPERCONV_TEST_SIGNAL_AT_STEP'


class PreemptionFlag:
  """Set by SIGTERM/SIGINT; the train loop checks it at every dispatch boundary.

  The first signal asks for a checkpoint and a clean exit, and says so at once on stderr:
  `describe(signal_name)` returns that line (the train loop's: how many queued updates finish
  first). A second SIGINT falls back to Python's default (KeyboardInterrupt): the run stops
  without saving, for a user who really wants out at once.
  """

  def __init__(self, describe: Callable[[str], str] | None = None):
    self._event = threading.Event()
    self.signal_name = ''
    self._previous = {}
    self._sync_point = True
    self._describe = describe
    value = os.environ.get(SIGNAL_AT_STEP_ENV, '')
    self._test_signal = (int(value.split(':')[0]), getattr(signal, value.split(':')[1])
                         ) if value else None

  def __enter__(self) -> 'PreemptionFlag':
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self._event.is_set() and signum == signal.SIGINT:
      raise KeyboardInterrupt
    if self._event.is_set():
      return
    self.signal_name = signal.Signals(signum).name
    self._event.set()
    line = (self._describe(self.signal_name) if self._describe else
            f'superconv: received {self.signal_name}: saving a checkpoint, then stopping; press '
            'Ctrl-C again to abort without saving.')
    # os.write, not print: a handler may interrupt a print to the same stream.
    os.write(sys.stderr.fileno(), (line + '\n').encode())

  def test_hook(self, step: int) -> None:
    """Sends the signal `SIGNAL_AT_STEP_ENV` names when the run has just done update `step`."""
    if self._test_signal and step == self._test_signal[0]:
      os.kill(os.getpid(), self._test_signal[1])

  def is_set(self, step: int | None = None) -> bool:
    """True when any process of the job was told to stop; every process must call it at the
    same updates (it is a collective on several processes), so all stop at the same update.

    Told means a SIGTERM / SIGINT to any one process (the others learn it through an
    all-gather), or, with `step`, the JAX coordination service's preemption notice
    (`multihost_utils.reached_preemption_sync_point`: Cloud TPU maintenance events reach it
    even where no process got a signal).
    """
    local = self._event.is_set()
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    told = bool(multihost_utils.process_allgather(jax.numpy.asarray(local)).any())
    if not told and step is not None and self._sync_point:
      try:
        told = bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError as e:  # no preemption service in this job: signals only
        logging.info('No JAX preemption sync point (%s); stopping on signals only.', e)
        self._sync_point = False
      if told:
        self.signal_name = 'the preemption notice'
    if told and not local and not self.signal_name:
      self.signal_name = 'a stop signal (on another process)'
    return told
