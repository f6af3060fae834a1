"""What superconv does differently per backend, in one place. Imports no JAX at module level.

XLA:CPU's convolution path. With YNNPACK convolution fusions on (XLA's default on the jaxlib
releases in `KNOWN_JAXLIB`), superconv's train step is slower on the CPU than with them off
(figures: docs/performance.md). `apply_cpu_defaults()`, called before JAX starts (superconv.main
and experiments.run do), adds `YNN_OFF` to `XLA_FLAGS` unless

- `SUPERCONV_XLA_CPU_DEFAULTS` is `0` / `false` / `no` / `off` (the opt-out),
- the user's `XLA_FLAGS` already sets `--xla_cpu_experimental_ynn_fusion_type` (any value: the
  user wins), or
- the installed jaxlib is not in `KNOWN_JAXLIB`: XLA aborts on an unknown flag in `XLA_FLAGS`,
  and the flag is experimental, so another release gets nothing rather than a crash.

XLA parses `XLA_FLAGS` into one set of options for every backend and only the CPU compiler reads
this one, so on a jaxlib that defines it an accelerator run is unchanged. Shell scripts take the
flags from here:

    export XLA_FLAGS="${XLA_FLAGS:-} $(python -m superconv.platform xla-flags)"

The CPU backend also differs in how updates are dispatched: `unrolls_updates` (a loop body keeps
XLA:CPU's slow convolutions, so k updates per call are unrolled), `steps_per_dispatch` (the
config's `cpu_*` fields) and `packs_by_default` (the packed state only where dispatch costs matter).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from typing import MutableMapping

YNN_FLAG_NAME = '--xla_cpu_experimental_ynn_fusion_type'
YNN_OFF = YNN_FLAG_NAME + '=-individual_convolution'
OPT_OUT_VAR = 'SUPERCONV_XLA_CPU_DEFAULTS'

# jaxlib (major, minor) releases whose bundled XLA defines the flag, where it changes the compiled
# program (no `__ynn_fusion` convolutions left) and was measured to make the train step faster
# (benchmarks/results/xla_flag_*.json). Extend only after the same checks on a new release.
KNOWN_JAXLIB = ((0, 10), (0, 11), (0, 12))


def _version_tuple(version: str) -> tuple[int, ...]:
  return tuple(int(p) for p in re.findall(r'\d+', version)[:3])


def jaxlib_version() -> str | None:
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return None


def flag_known(version: str | None) -> bool:
  """Whether jaxlib `version` is a release where the flag is verified to exist and help."""
  if not version:
    return False
  return _version_tuple(version)[:2] in KNOWN_JAXLIB


def flag_in_jaxlib(flag: str = YNN_FLAG_NAME) -> bool:
  """Slow check (reads ~350 MB): whether the installed jaxlib's shared library defines `flag`."""
  import glob  # pylint: disable=g-import-not-at-top
  try:
    dist = importlib.metadata.distribution('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return False
  root = os.path.join(str(dist.locate_file('')), 'jaxlib')
  needle = flag.lstrip('-').encode()
  for path in glob.glob(os.path.join(root, '**', '*.so'), recursive=True):
    with open(path, 'rb') as f:
      tail = b''
      while chunk := f.read(1 << 24):
        if needle in tail + chunk:
          return True
        tail = chunk[-len(needle):]
  return False


def user_sets(flags: str, name: str) -> bool:
  """Whether the space-separated XLA flag string `flags` already sets flag `name`."""
  return any(f.split('=', 1)[0] == name for f in flags.split())


def cpu_defaults(environ: MutableMapping[str, str] | None = None,
                 version: str | None = None) -> list[str]:
  """The flags `apply_cpu_defaults` would add to `environ['XLA_FLAGS']` (may be empty)."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT_VAR, '1').strip().lower() in ('0', 'false', 'no', 'off'):
    return []
  if user_sets(environ.get('XLA_FLAGS', ''), YNN_FLAG_NAME):
    return []
  if not flag_known(jaxlib_version() if version is None else version):
    return []
  return [YNN_OFF]


def apply_cpu_defaults(environ: MutableMapping[str, str] | None = None,
                       version: str | None = None) -> list[str]:
  """Merges superconv's CPU defaults into `environ['XLA_FLAGS']`; returns the flags added.

  Has an effect only before JAX initialises its backends (XLA reads `XLA_FLAGS` once).
  """
  environ = os.environ if environ is None else environ
  added = cpu_defaults(environ, version)
  if added:
    environ['XLA_FLAGS'] = ' '.join([environ.get('XLA_FLAGS', '').strip(), *added]).strip()
  return added


def _backend(backend: str | None) -> str:
  if backend:
    return backend
  import jax  # pylint: disable=g-import-not-at-top
  return jax.default_backend()


def unrolls_updates(platform: str) -> bool:
  """Whether k updates in one call are unrolled (straight-line code) rather than a loop.

  XLA:CPU rewrites convolutions to its fast form only at the top level of a program, not in a
  loop body (jax-ml/jax#12868), so on the CPU the updates of one call are unrolled; accelerators
  keep the loop (one compiled body).
  """
  return platform == 'cpu'


def steps_per_dispatch(config, backend: str | None = None) -> int:
  """Updates per call the config asks for on `backend` (before fitting them to boundaries).

  Accelerators: `steps_per_dispatch`. The CPU: `cpu_steps_per_dispatch` for runs of at least
  `cpu_unroll_min_steps` updates, else 1, since the unrolled program holds k copies of the
  update and compiles about k times as long, which only a long run wins back.
  """
  if _backend(backend) == 'cpu':
    long_run = int(config.num_steps) >= int(config.cpu_unroll_min_steps)
    return max(int(config.cpu_steps_per_dispatch), 1) if long_run else 1
  return max(int(config.steps_per_dispatch), 1)


def packs_by_default(backend: str | None = None) -> bool:
  """Whether the programs hold the state packed between calls (`step.pack`): off on the CPU.

  Packing saves host time per dispatch, which matters where an update takes milliseconds; on the
  CPU an update takes hundreds and the packed step compiles slower (docs/performance.md).
  """
  return _backend(backend) != 'cpu'


def main(argv: list[str]) -> int:
  """`python -m superconv.platform xla-flags`: the flags `apply_cpu_defaults` would add."""
  if argv[1:] != ['xla-flags']:
    print('usage: python -m superconv.platform xla-flags', file=sys.stderr)
    return 2
  print(' '.join(cpu_defaults()))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
