"""Metric files in the workdir (metrics.jsonl, summary.json, config.json) and run provenance.

The workdir may be local or on an object store (`gs://bucket/run`): see `superconv.storage`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from typing import Any, Iterable

import jax

from superconv import storage


def clean(value: Any) -> Any:
  """JSON-safe scalars: numpy/jax numbers to Python, NaN/inf to strings JSON can hold."""
  if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if isinstance(value, dict):
    return {k: clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [clean(v) for v in value]
  return value


class MetricWriter:
  """Appends one JSON object per line to `path`; only process 0 writes.

  On resume, rows past the restored step are dropped first, so an interrupted and resumed run
  ends with exactly the rows of an uninterrupted one; `rows` holds the rows kept (process 0).
  On an object store, which cannot append, the whole object is rewritten instead
  (`storage.AppendFile`: at most every few seconds, and at `flush()` and `close()`).
  """

  def __init__(self, path: str, *, resume_step: int | None = None):
    self.path = path
    self.active = jax.process_index() == 0
    self.rows: list[dict] = []
    self._file = None
    if not self.active:
      return
    rows = list(read_jsonl(path)) if storage.path(path).exists() else []
    self.rows = [r for r in rows if resume_step is not None and r.get('step', 0) <= resume_step]
    kept = ''.join(json.dumps(r) + '\n' for r in self.rows)
    self._file = storage.AppendFile(path, kept.encode())

  def write(self, row: dict) -> None:
    if self._file is not None:
      self._file.append((json.dumps(clean(row)) + '\n').encode())

  def flush(self) -> None:
    """Makes every row written so far durable (a no-op on a disk: each row already is)."""
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    self.flush()


def read_jsonl(path: str) -> Iterable[dict]:
  for line in storage.path(path).read_text().split('\n'):
    if line.strip():
      yield json.loads(line)


def write_json(path: str, obj: Any) -> None:
  """Writes atomically (a disk: temp file + rename; an object store: one object write), so a
  crash never leaves half a summary."""
  if jax.process_index() != 0:
    return
  storage.write_atomic(path, json.dumps(clean(obj), indent=2, sort_keys=True) + '\n')


def git_commit() -> str:
  try:
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True, text=True,
                         timeout=5, check=False)
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=here,
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    return out.stdout.strip() + ('+dirty' if dirty else '') if out.returncode == 0 else 'unknown'
  except (OSError, subprocess.SubprocessError):
    return 'unknown'


def provenance() -> dict:
  """Hardware, library versions and the code version: what a results file must carry."""
  import flax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  return {
      'git_commit': git_commit(),
      'devices': f'{len(devices)} x {devices[0].device_kind}',
      'platform': devices[0].platform,
      'process_count': jax.process_count(),
      'host_cpu': f'{cpu} ({os.cpu_count()} cores)',
      'python': platform.python_version(),
      'jax': jax.__version__,
      'flax': flax.__version__,
      'optax': optax.__version__,
  }
