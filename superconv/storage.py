"""A workdir's files on a local disk or an object store (`gs://`, `s3://`), through etils.epath.

Every file superconv writes into a workdir and reads back (config.json, metrics.jsonl,
summary.json, TensorBoard events, the range test's json and plot, the W&B run id) goes through
`epath.Path`, so `--workdir=gs://bucket/run` behaves as a local folder does; orbax takes the same
paths for the checkpoints. On `gs://`, epath uses TensorFlow's gfile if TensorFlow is installed
and `gcsfs` otherwise (superconv needs no TensorFlow).

An object store is not a file system in two ways that matter here:

- An object cannot be appended to, only written whole. `AppendFile` (metrics.jsonl, event files)
  therefore keeps what it has written and rewrites the whole object: at most once every
  `REWRITE_SECONDS` (GCS accepts about one write per second to one object name), at every
  `flush()` (the train loop flushes before each checkpoint, so a crash never loses a row that a
  resume keeps), and at `close()`. A metrics row is ~300 bytes, so even 10^4 rows are a few MB.
- There is no atomic rename, but writing one object is atomic: a reader sees the old object or
  the new one, never half of one. `write_atomic` uses a temp file and `os.replace` on a disk and
  a single object write on a store.

This module sits on the floor with `metrics`: it imports nothing of superconv.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Union

from etils import epath

PathLike = Union[str, os.PathLike]

REWRITE_SECONDS = 2.0  # the shortest gap between two rewrites of one object (flush() ignores it)


def path(p: PathLike) -> epath.Path:
  """`p` as an `epath.Path` (local paths stay as they are: relative ones stay relative)."""
  return epath.Path(p)


def is_object_store(p: PathLike) -> bool:
  """True for a URI path (gs://, s3://, ...): one that cannot be appended to or renamed."""
  return '://' in os.fspath(p)


def makedirs(p: PathLike) -> epath.Path:
  """Creates folder `p` and its parents if needed (object stores have no folders: a no-op)."""
  p = path(p)
  p.mkdir(parents=True, exist_ok=True)
  return p


def write_atomic(p: PathLike, data: str | bytes) -> None:
  """Writes the whole of `p` so that no reader or crash ever sees a part of it."""
  p = path(p)
  data = data.encode() if isinstance(data, str) else data
  if is_object_store(p):
    p.write_bytes(data)   # one object write: atomic on GCS and S3
    return
  tmp = p.with_name(p.name + '.tmp')
  tmp.write_bytes(data)
  os.replace(tmp, p)


def move(src: PathLike, dst: PathLike) -> None:
  """Moves a file or folder (on an object store: copies each object, then deletes the source)."""
  if is_object_store(src):
    path(src).rename(dst)
  else:
    shutil.move(os.fspath(src), os.fspath(dst))


class AppendFile:
  """A file written only at its end: appended to on a disk, rewritten whole on an object store.

  Starts the file with `initial` (replacing what was there). On a disk every `append` reaches the
  file at once (a crash loses at most the write in progress). On an object store the whole
  content is kept in memory and written as one object when `REWRITE_SECONDS` have passed since
  the last write, at `flush()` and at `close()`; a crash loses what was appended since the last
  of those.
  """

  def __init__(self, p: PathLike, initial: bytes = b'', *,
               rewrite_seconds: float = REWRITE_SECONDS):
    self.path = path(p)
    self.remote = is_object_store(p)
    self._rewrite_seconds = rewrite_seconds
    self._content = bytearray(initial)
    self._dirty = False
    self._last_write = 0.0
    if self.remote:
      self._write_whole()
    else:
      with self.path.open('wb') as f:
        f.write(initial)

  def append(self, data: bytes) -> None:
    if not self.remote:
      with self.path.open('ab') as f:
        f.write(data)
      return
    self._content += data
    self._dirty = True
    if time.monotonic() - self._last_write >= self._rewrite_seconds:
      self._write_whole()

  def flush(self) -> None:
    if self.remote and self._dirty:
      self._write_whole()

  def close(self) -> None:
    self.flush()

  def _write_whole(self) -> None:
    self.path.write_bytes(bytes(self._content))
    self._dirty = False
    self._last_write = time.monotonic()
