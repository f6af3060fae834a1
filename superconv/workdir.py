"""A workdir is one run: its `config.json` is the run's identity, and one process writes it.

`claim(config, workdir)` is what a program enters before it writes anything:

1. The workdir is created (or found) and must be writable; if not, a `WorkdirError` in one line.
2. A lock (`LOCK_FILE`, JSON with the holder's host, PID, start time and command) is taken; a
   second run on the same workdir stops at once naming the holder. A lock whose process is gone
   (same host: its PID no longer runs, or runs another program) is taken over with a warning.
   Released on every exit path (a normal end, an error, a preemption, a second Ctrl-C); only a
   SIGKILL leaves it behind, and the next run on that host takes it over.
3. The config is compared with the workdir's `config.json`, field by field, after both went
   through JSON (so tuples and lists compare equal; a field that config.json lacks because it
   was added to configs/default.py later counts as equal while it holds its default). Fields
   tagged `[op]` in configs/default.py
   (`config_lib.operational_fields`: logging, progress, evaluation and checkpoint cadence,
   cache and thread settings, `stop_after_steps`, ...) may differ: they change how a run is
   watched, saved or executed, not what is trained. Any other difference stops the run with a
   `WorkdirError` naming each field with both values, unless `config.allow_config_change` is
   True; then the change is appended to `CHANGES_FILE` and `config.json` holds the new config.
   `record_config()` writes `config.json` (and the history line) once the program has checked
   its data, so a refused or failed first run leaves no file behind.

On an object store (`gs://`) there is no exclusive create: the lock is an object written after
checking that none exists and read back to see that this run's write won. Two runs started
within the same second can both pass that check (the later write wins and the other run
continues unlocked), and a run killed without a chance to clean up on another host leaves the
lock object, which must then be deleted by hand (the error message names it). docs/reliability.md
lists this limitation.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import json
import os
import socket
import sys
from typing import Any

from absl import logging

from superconv import config_lib
from superconv import storage

CONFIG_FILE = 'config.json'
LOCK_FILE = 'superconv.lock'
CHANGES_FILE = 'config_changes.jsonl'


class WorkdirError(RuntimeError):
  """The workdir cannot take this run: locked, another run's, or not writable (one line)."""


# ---------------------------------------------------------------------------------------------
# Identity: what differs between two configs


def _json(tree: Any) -> Any:
  """`tree` as config.json holds it (tuples become lists, numpy scalars Python numbers)."""
  from superconv import metrics  # pylint: disable=g-import-not-at-top  (imports jax)
  return json.loads(json.dumps(metrics.clean(tree)))


def flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1} (an empty section stays a leaf)."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out.update(flatten(value, name + '.'))
    else:
      out[name] = value
  return out


_ABSENT = '<absent>'


def differences(recorded: dict, config: dict) -> tuple[list, list]:
  """(training, operational) differences between two config dicts, each a list of
  (field, recorded value, new value); a field only one side has shows as '<absent>'.

  E.g. `differences({'seed': 0, 'log_every_steps': 10}, {'seed': 1, 'log_every_steps': 20})`
  is `([('seed', 0, 1)], [('log_every_steps', 10, 20)])` (tests/test_reliability.py).
  """
  a, b = flatten(_json(recorded)), flatten(_json(config))
  training, operational = [], []
  for field in sorted(set(a) | set(b)):
    old, new = a.get(field, _ABSENT), b.get(field, _ABSENT)
    if old is _ABSENT and new == _defaults().get(field, _ABSENT):
      continue  # a field added to configs/default.py since the run began, at its default
    if old != new:
      kind = operational if config_lib.is_operational(field) else training
      kind.append((field, old, new))
  return training, operational


@functools.cache
def _defaults() -> dict[str, Any]:
  """configs/default.py's fields, flattened (new fields default to the behaviour before them)."""
  default = importlib.import_module('configs.default')
  return flatten(_json(default.get_config().to_dict()))


def _describe(diffs: list) -> str:
  return ', '.join(f'{f} (config.json {old!r}, now {new!r})' for f, old, new in diffs)


# ---------------------------------------------------------------------------------------------
# The lock


def process_start(pid: int) -> str:
  """The start time of process `pid` in clock ticks since boot ('' where /proc has none): a PID
  the system gave to a later process has another start time."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return ''


def _alive(holder: dict) -> bool:
  """Whether the process that wrote `holder` may still run (always True on another host)."""
  if holder.get('host') != socket.gethostname():
    return True
  pid = int(holder.get('pid', 0) or 0)
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # runs, as another user
  started = holder.get('process_start', '')
  return not started or not process_start(pid) or process_start(pid) == started


class Lock:
  """One writer per workdir: `acquire()` or a WorkdirError naming the holder; `release()`.

  `object_store`: use the check-write-read protocol of object stores (default: when `workdir`
  is a URI); tests force it on a local folder.
  """

  def __init__(self, workdir: str, *, object_store: bool | None = None):
    self.path = storage.path(os.path.join(workdir, LOCK_FILE))
    self.object_store = (storage.is_object_store(workdir) if object_store is None
                         else object_store)
    self.held = False
    self.info = {
        'host': socket.gethostname(), 'pid': os.getpid(),
        'process_start': process_start(os.getpid()),
        'since': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': ' '.join(sys.argv),
    }

  def _read(self) -> dict | None:
    try:
      return json.loads(self.path.read_text())
    except FileNotFoundError:
      return None
    except (ValueError, OSError):
      return {}  # half written or unreadable: treated as held by an unknown run

  def _busy(self, holder: dict) -> WorkdirError:
    who = (f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
           f"{holder.get('since', '?')}" if holder else 'an unreadable lock')
    return WorkdirError(
        f'the workdir {self.path.parent} is in use by another run ({who}: '
        f"{holder.get('command', '?') if holder else '?'}). Wait for it to end or use another "
        f'--workdir; if that run is gone (e.g. killed on another machine), delete {self.path}.')

  def _create(self) -> bool:
    """Writes the lock if none exists; False if one does."""
    data = json.dumps(self.info) + '\n'
    if self.object_store:
      if self.path.exists():
        return False
      self.path.write_text(data)
      return True
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      f.write(data)
    return True

  def acquire(self) -> None:
    for _ in range(2):  # the second try follows the removal of a stale lock
      if self._create():
        if self.object_store and self._read() != self.info:  # another run's write came last
          raise self._busy(self._read() or {})
        self.held = True
        return
      holder = self._read()
      if holder is None:
        continue  # released between our create and read
      if not holder or _alive(holder):
        raise self._busy(holder)
      logging.warning('Taking over the lock of a run that is gone (PID %s on %s, since %s): %s.',
                      holder.get('pid'), holder.get('host'), holder.get('since'), self.path)
      print(f"superconv: warning: took over the lock of a run that ended without releasing it "
            f"(PID {holder.get('pid')}, since {holder.get('since')}).", file=sys.stderr)
      self.path.unlink(missing_ok=True)
    raise self._busy(self._read() or {})

  def release(self) -> None:
    if not self.held:
      return
    self.held = False
    try:
      if self._read() == self.info:  # never delete another run's lock
        self.path.unlink(missing_ok=True)
    except OSError as e:
      logging.warning('Could not remove the lock %s (%s).', self.path, e)


# ---------------------------------------------------------------------------------------------
# The claim


def _writable(workdir: str) -> bool:
  """Creates `workdir` if needed; True if this call created it. Raises WorkdirError when it
  cannot be created or written."""
  existed = storage.path(workdir).exists()
  try:
    storage.makedirs(workdir)
    if not storage.is_object_store(workdir) and not os.access(workdir, os.W_OK | os.X_OK):
      raise PermissionError(f'no write permission for {workdir}')
  except OSError as e:
    raise WorkdirError(f'cannot create or write the workdir {workdir} ({type(e).__name__}: '
                       f'{e.strerror or e}); choose a --workdir this user can write.') from None
  return not existed


class Claim:
  """The lock and identity check of one run in one workdir (see the module docstring).

  `check_identity=False` (evaluation: it writes only its own eval.json) takes the lock only.
  """

  def __init__(self, config, workdir: str, *, check_identity: bool = True,
               object_store: bool | None = None):
    self.config = config
    self.workdir = workdir
    self.check_identity = check_identity
    self.lock = Lock(workdir, object_store=object_store)
    self.recorded: dict | None = None
    self.changes: tuple[list, list] = ([], [])
    self._created = False
    self._wrote_config = False
    self._main = _is_main_process()

  def __enter__(self) -> 'Claim':
    config_path = storage.path(os.path.join(self.workdir, CONFIG_FILE))
    refused = None
    if self._main:
      try:
        self._created = _writable(self.workdir)
        self.lock.acquire()
      except PermissionError as e:  # a folder that exists but is read-only
        refused = WorkdirError(f'cannot write the workdir {self.workdir} ({type(e).__name__}: '
                               f'{e.strerror or e}); choose a --workdir this user can write.')
      except WorkdirError as e:
        refused = e
    _agree_on(refused)
    try:
      if self.check_identity and config_path.exists():
        self.recorded = json.loads(config_path.read_text())
        self.changes = differences(self.recorded, self.config.to_dict())
        training = self.changes[0]
        if training and not self.config.get('allow_config_change', False):
          raise WorkdirError(
              f'the workdir {self.workdir} holds a run whose config.json differs in what is '
              f'trained: {_describe(training)}; use a new --workdir for a new run, or pass '
              '--config.allow_config_change=True to continue this one with the new values '
              f'(recorded in {CHANGES_FILE}).')
    except BaseException:
      self.__exit__(*sys.exc_info())
      raise
    return self

  def record_config(self) -> None:
    """Writes config.json (a first run, or changed values) and logs changes to CHANGES_FILE."""
    from superconv import metrics  # pylint: disable=g-import-not-at-top
    training, operational = self.changes
    if self.recorded is not None and not (training or operational):
      return
    if self._main and (training or operational):
      line = {'time': self.lock.info['since'], 'host': self.lock.info['host'],
              'command': self.lock.info['command'],
              'training': {f: [old, new] for f, old, new in training},
              'operational': {f: [old, new] for f, old, new in operational}}
      path = os.path.join(self.workdir, CHANGES_FILE)
      old = storage.path(path).read_text() if storage.path(path).exists() else ''
      storage.write_atomic(path, old + json.dumps(line) + '\n')
      if training:
        logging.warning('Continuing %s with changed training fields (%s); recorded in %s.',
                        self.workdir, _describe(training), CHANGES_FILE)
    metrics.write_json(os.path.join(self.workdir, CONFIG_FILE), self.config.to_dict())
    self._wrote_config = True

  def __exit__(self, exc_type, exc, tb) -> None:
    if not self._main:
      return
    self.lock.release()
    if exc_type is not None and self._created:
      # A first run that failed before training (bad data, no checkpoint to evaluate): leave
      # nothing (its config.json, an empty checkpoints folder) unless it wrote more.
      root = storage.path(self.workdir)
      left = list(root.iterdir())
      if all(p.name == CONFIG_FILE or (p.is_dir() and not any(p.iterdir())) for p in left):
        for p in left:
          p.rmdir() if p.is_dir() else p.unlink()
        if not storage.is_object_store(self.workdir):
          os.rmdir(self.workdir)


def _agree_on(refused: WorkdirError | None) -> None:
  """Raises `refused` on process 0, and on every other process of the job an error saying
  process 0 refused the workdir (only process 0 takes the lock)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if int(multihost_utils.broadcast_one_to_all(np.int32(refused is not None))) and not refused:
      refused = WorkdirError('process 0 refused the workdir (its message says why).')
  if refused is not None:
    raise refused


def _is_main_process() -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def claim(config, workdir: str, **kwargs) -> Claim:
  """`Claim(config, workdir, **kwargs)`: use as `with workdir.claim(config, path) as run:`."""
  return Claim(config, workdir, **kwargs)
