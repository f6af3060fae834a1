"""TensorBoard event files and optional Weights & Biases, written beside `metrics.jsonl`.

`metrics.jsonl` stays the record of a run; the writers here copy every numeric value of every row
to the dashboards people look at. `open_writers(config, workdir, resume_step=)` builds all of them
from `config.logging` and returns one object with `write(row)`, `rows` and `close()`.

TensorBoard (on by default, `config.logging.tensorboard = True`)
  Every numeric field of every row (train rows, eval rows, `lr`, `momentum`, the norms, ...) is a
  scalar under its `metrics.jsonl` name, at the row's `step` (the optimizer update). Event files go
  to `WORKDIR/tensorboard/`; writing them needs no TensorFlow and no extra package. To look:

      pip install tensorboard
      tensorboard --logdir WORKDIR/tensorboard      # one run
      tensorboard --logdir ROOT                     # every workdir below ROOT, one run each

  Only process 0 writes. Each row is flushed as it is written, so a crash loses at most the row
  being written. On an object store (`--workdir=gs://...`), which cannot append, the event file is
  rewritten whole every few seconds and at each checkpoint and at the end, as metrics.jsonl is
  (`superconv.storage.AppendFile`); `tensorboard --logdir gs://...` reads it when gcsfs (or
  TensorFlow) is installed beside TensorBoard. Every start and every resume opens a new event file (a run that was resumed
  twice has three). The first record of each file marks a restart from the restored update, and
  TensorBoard then drops the points that the interrupted run logged after that update, which are
  the rows `metrics.jsonl` drops too. So a resumed run shows one unbroken curve, the same as a run
  that was never stopped; only the wall-clock axis shows the gap. (Checked with TensorBoard
  2.21's Python loader, which tbparse and `--load_fast=false` use, and its default fast loader.)

Weights & Biases (optional: `pip install "superconv[wandb]"`)
  config.logging.wandb.enabled = True       # off by default
  config.logging.wandb.project = 'superconv'
  config.logging.wandb.entity = ''          # '' = your default W&B entity
  config.logging.wandb.name = ''            # '' = a name W&B makes up
  config.logging.wandb.mode = 'online'      # 'online' | 'offline' | 'disabled'

  Each row is logged at `step` = the optimizer update, and the whole config becomes the run's
  config. The run id is kept in `WORKDIR/wandb_run_id`, so running the same command again after a
  preemption continues the same W&B run (`resume='allow'`). W&B's own files go to `WORKDIR/wandb/`,
  or to `$WANDB_DIR` if that is set; W&B writes only to a local disk, so with a `gs://` workdir
  they go to `$WANDB_DIR` or W&B's default (`./wandb`). W&B accepts only increasing steps. A resumed run therefore
  skips the rows the W&B run already holds; superconv's resume is bit-identical, so those rows
  carry the same numbers the replay would log, apart from timing. Offline (no network, e.g. on a
  compute node): set `mode='offline'` or `WANDB_MODE=offline`, then upload from a machine that can
  reach W&B with

      wandb sync WORKDIR/wandb/offline-run-*

  A config that enables W&B without the package installed fails before anything is loaded, in one
  line that names the extra to install.

This module sits one floor above `metrics` (whose MetricWriter it wraps); `metrics` never
imports it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import struct
import time
from typing import Any

import jax

from superconv import metrics
from superconv import storage

TENSORBOARD_DIR = 'tensorboard'      # below the workdir: TensorBoard walks a logdir recursively,
                                     # and this keeps it off the checkpoint tree
WANDB_RUN_ID_FILE = 'wandb_run_id'   # below the workdir: the id a resume continues
WANDB_MODES = ('online', 'offline', 'disabled')
WANDB_EXTRA = 'pip install "superconv[wandb]"'


class LoggingConfigError(ValueError):
  """`config.logging` asks for something this installation cannot do (one-line message)."""


# ---------------------------------------------------------------------------------------------
# Config

def _logging_options(config) -> tuple[bool, dict]:
  """(tensorboard on?, wandb options) from `config.logging`; configs without the section log to
  TensorBoard only, as the defaults do."""
  section = config.get('logging') if hasattr(config, 'get') else None
  wandb_opts = {'enabled': False, 'project': 'superconv', 'entity': '', 'name': '',
                'mode': 'online'}
  if section is None:
    return True, wandb_opts
  given = section.get('wandb')
  if given is not None:
    wandb_opts.update(given.to_dict() if hasattr(given, 'to_dict') else dict(given))
  return bool(section.get('tensorboard', True)), wandb_opts


def check_config(config) -> None:
  """Raises LoggingConfigError if `config.logging` cannot work here (bad value, missing package).

  Cheap and side-effect free; `config_checks.validate` calls it so the error comes before any
  data is loaded or anything is compiled.
  """
  _, opts = _logging_options(config)
  if not opts['enabled']:
    return
  if opts['mode'] not in WANDB_MODES:
    raise LoggingConfigError(
        f'config.logging.wandb.mode: {opts["mode"]!r} is not one of {WANDB_MODES}.')
  if not str(opts['project']):
    raise LoggingConfigError('config.logging.wandb.project: must name a W&B project.')
  _import_wandb()


def _import_wandb():
  try:
    import wandb  # pylint: disable=g-import-not-at-top
  except ImportError:
    # `from None`: the one line below says all there is to say.
    raise LoggingConfigError(
        'config.logging.wandb.enabled=True needs the optional package wandb, which is not '
        f'installed: {WANDB_EXTRA}') from None
  return wandb


def _numeric_scalars(row: dict) -> dict[str, float]:
  """The fields of `row` a dashboard can plot: numbers (numpy and 0-d jax arrays too), not `step`,
  not flags, strings or lists."""
  out = {}
  for key, value in row.items():
    if key == 'step':
      continue
    if hasattr(value, 'item') and getattr(value, 'ndim', None) == 0:
      value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    out[key] = float(value)
  return out


# ---------------------------------------------------------------------------------------------
# TensorBoard: TFRecord files of `tensorboard.Event` protos, encoded here.
#
# Why our own encoder rather than tensorboardX or tensorboard's EventFileWriter: an event file of
# scalars uses five protobuf fields and one record framing, about 60 lines. tensorboard would make
# grpcio, werkzeug, markdown and the data server a core dependency of training (only the viewer
# needs them). tensorboardX ships protobuf gencode that must keep working with whatever protobuf
# runtime jax, orbax and tfds bring in, which has broken before. The tests read these files back
# with TensorBoard's own loader (CRC checks included). That check is what makes the encoder sound.

def _crc32c_table() -> list[int]:
  table = []
  for n in range(256):
    c = n
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1   # Castagnoli polynomial, reflected
    table.append(c)
  return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`, as TFRecord framing uses it. crc32c(b'123456789') = 0xE3069283."""
  crc = 0xFFFFFFFF
  for b in data:
    crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
  # TFRecord stores a rotated and offset CRC, so that a CRC of data that itself holds CRCs is
  # not trivially zero.
  crc = crc32c(data)
  return struct.pack('<I', (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _tfrecord(payload: bytes) -> bytes:
  """One TFRecord: length, masked CRC of the length, payload, masked CRC of the payload."""
  length = struct.pack('<Q', len(payload))
  return length + _masked_crc(length) + payload + _masked_crc(payload)


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1   # int64 fields: negative values are ten bytes of two's complement
  out = bytearray()
  while n > 0x7F:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload     # wire type 2


def _event(step: int, wall_time: float, *, file_version: str | None = None,
           values: dict[str, float] | None = None, session_start: bool = False) -> bytes:
  """A serialized tensorboard Event (event.proto: wall_time=1 double, step=2 int64,
  file_version=3, summary=5, session_log=7). Summary.Value: tag=1, simple_value=2 float."""
  out = bytearray(b'\x09' + struct.pack('<d', wall_time))   # field 1, wire type 1 (64-bit)
  out += b'\x10' + _varint(int(step))                         # field 2, varint
  if file_version is not None:
    out += _field_bytes(3, file_version.encode())
  if values:
    summary = b''.join(
        _field_bytes(1, _field_bytes(1, tag.encode()) + b'\x15' + struct.pack('<f', value))
        for tag, value in values.items())                      # simple_value: field 2, 32-bit
    out += _field_bytes(5, summary)
  if session_start:
    out += _field_bytes(7, b"\x08\x01")                        # SessionLog.status = START
  return bytes(out)


def _event_file_name(logdir: str) -> str:
  """TensorBoard's naming (`events.out.tfevents.<seconds>.<host>.<pid>`), with the seconds made
  later than any file already there: TensorBoard reads a folder's files in name order, and a
  restart's purge record only works if it comes after the rows it purges."""
  now = int(time.time())
  folder = storage.path(logdir)
  for name in (p.name for p in folder.iterdir()) if folder.exists() else ():
    m = re.match(r'events\.out\.tfevents\.(\d+)\.', name)
    if m:
      now = max(now, int(m.group(1)) + 1)
  return f'events.out.tfevents.{now:010d}.{socket.gethostname()}.{os.getpid()}.superconv'


class TensorBoardWriter:
  """Writes each row's numeric fields as TensorBoard scalars at the row's step; process 0 only.

  `resume_step`: the update the run was restored at (None: a run from scratch). The new file opens
  with a restart record at `resume_step + 1`, so TensorBoard drops what an interrupted run logged
  past the restored update (the rows `MetricWriter` drops from metrics.jsonl).
  """

  def __init__(self, logdir: str, *, resume_step: int | None = None):
    self.logdir = logdir
    self.path = None
    self._file = None
    if jax.process_index() != 0:
      return
    storage.makedirs(logdir)
    self.path = os.path.join(logdir, _event_file_name(logdir))
    now = time.time()
    first_kept = 0 if resume_step is None else int(resume_step) + 1
    # Appended to on a disk, rewritten whole on an object store (which cannot append).
    self._file = storage.AppendFile(
        self.path, _tfrecord(_event(first_kept, now, file_version='brain.Event:2')) +
        _tfrecord(_event(first_kept, now, session_start=True)))

  def write(self, row: dict) -> None:
    if self._file is None:
      return
    values = _numeric_scalars(row)
    if not values:
      return
    # On a disk a crash then loses at most the row being written.
    self._file.append(_tfrecord(_event(int(row['step']), time.time(), values=values)))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


# ---------------------------------------------------------------------------------------------
# Weights & Biases

def _run_id(path: str) -> str:
  """The W&B run id kept in `path`, made and saved (atomically) on the first start."""
  if storage.path(path).exists():
    run_id = storage.path(path).read_text().strip()
    if run_id:
      return run_id
  run_id = secrets.token_hex(4)   # W&B ids: short, lowercase letters and digits
  storage.write_atomic(path, run_id + '\n')
  return run_id


class WandbWriter:
  """Logs each row's numeric fields to a W&B run at the row's step; process 0 only.

  The run id lives in `workdir/wandb_run_id`, so a resumed run continues the same W&B run.
  """

  def __init__(self, config, workdir: str, options: dict):
    self.run = None
    self.run_id = None
    if jax.process_index() != 0:
      return
    wandb = _import_wandb()
    self.run_id = _run_id(os.path.join(workdir, WANDB_RUN_ID_FILE))
    config_dict = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
    self.run = wandb.init(
        project=str(options['project']), entity=str(options['entity']) or None,
        name=str(options['name']) or None, mode=str(options['mode']),
        id=self.run_id, resume='allow', config=config_dict,
        # W&B writes with plain file I/O: an object-store workdir cannot hold its files.
        dir=os.environ.get('WANDB_DIR') or (
            None if storage.is_object_store(workdir) else workdir))
    # W&B drops (with a warning per call) any step below the run's current one. On a resume the
    # run already holds the rows up to where it was interrupted; skip those quietly.
    self._next_step = int(getattr(self.run, 'step', 0) or 0)

  def write(self, row: dict) -> None:
    if self.run is None:
      return
    step = int(row['step'])
    if step < self._next_step:
      return
    self.run.log(_numeric_scalars(row), step=step)
    self._next_step = step

  def close(self) -> None:
    if self.run is not None:
      self.run.finish()
      self.run = None


# ---------------------------------------------------------------------------------------------
# All of them

class RunWriters:
  """metrics.jsonl plus the dashboards `config.logging` turns on, written as one.

  `rows` are the metrics.jsonl rows kept from before a resume, as `MetricWriter.rows`.
  """

  def __init__(self, jsonl: metrics.MetricWriter, others: list):
    self.jsonl = jsonl
    self.writers = [jsonl, *others]

  @property
  def rows(self) -> list[dict]:
    return self.jsonl.rows

  def write(self, row: dict) -> None:
    for writer in self.writers:   # metrics.jsonl first: it is the record if a dashboard fails
      writer.write(row)

  def flush(self) -> None:
    """Makes every row written so far durable: a no-op on a disk, a rewrite of each file on an
    object store. The train loop calls it before each checkpoint, so a resume never lacks a row
    up to the restored update."""
    for writer in self.writers:
      flush = getattr(writer, 'flush', None)
      if flush is not None:
        flush()

  def close(self) -> None:
    for writer in self.writers:
      close = getattr(writer, 'close', None)
      if close is not None:
        close()

  def __enter__(self) -> 'RunWriters':
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def open_writers(config, workdir: str, *, resume_step: int | None = None) -> RunWriters:
  """metrics.jsonl, TensorBoard and (if enabled) W&B writers for a run in `workdir`.

  Args:
    config: the run's config; `config.logging` selects the dashboards (see the module docstring).
      The whole config becomes the W&B run config.
    workdir: the run's folder (must exist).
    resume_step: the update a checkpoint was restored at, or None for a run from scratch. Rows
      past it are dropped from metrics.jsonl and hidden in TensorBoard.

  Raises:
    LoggingConfigError: before any file is touched, if `config.logging` cannot work here.
  """
  check_config(config)
  tensorboard, wandb_opts = _logging_options(config)
  jsonl = metrics.MetricWriter(os.path.join(workdir, 'metrics.jsonl'), resume_step=resume_step)
  others = []
  if tensorboard:
    others.append(TensorBoardWriter(os.path.join(workdir, TENSORBOARD_DIR),
                                    resume_step=resume_step))
  if wandb_opts['enabled']:
    others.append(WandbWriter(config, workdir, wandb_opts))
  return RunWriters(jsonl, others)
