"""What a benchmark records about the machine it ran on: the CPU, versions, the load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess


def uptime() -> str:
  """`uptime`'s line (the load averages), or '' where it cannot run."""
  try:
    return subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()
  except OSError:
    return ''


def hardware() -> dict:
  """The CPU model and core count, the Python version and the versions of the libraries timed."""
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), cpu)
  except OSError:
    pass
  versions = {}
  for pkg in ('jax', 'jaxlib', 'flax', 'optax', 'torch'):
    try:
      versions[pkg] = importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
      versions[pkg] = None
  return {'cpu': cpu, 'cores': os.cpu_count(), 'python': platform.python_version(), **versions}
