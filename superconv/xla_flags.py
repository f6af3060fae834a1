"""XLA flags superconv sets by default on the CPU. Imports nothing from JAX: call it before JAX starts.

    from superconv import xla_flags
    xla_flags.apply_cpu_defaults()   # first line of a program, before `import jax`

XLA:CPU (jaxlib 0.10.x) runs convolutions through YNNPACK ("individual_convolution" YNN fusions);
with it off, superconv's update is faster on the CPU (ResNet-20 128.8 -> 184.2 img/s, LeNet 1,415 ->
1,906 img/s on an idle 2-core EPYC; 1.13x for ResNet-20 on a loaded one, `benchmarks/results/
breakdown_cpu.json`), mostly because the YNN convolution fusions cost extra elementwise and layout
work around them, not because XLA's kernels are faster one by one
(`python -m benchmarks.throughput --convs`). The flag
`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution` removes that fusion type from
XLA's default list. It is added to the user's `XLA_FLAGS` only when

- `SUPERCONV_XLA_CPU_DEFAULTS` is not `0` (the opt-out),
- the user's `XLA_FLAGS` does not already mention `--xla_cpu_experimental_ynn_fusion_type` (any
  value, either sign: the user wins), and
- the installed jaxlib is a version known to define the flag (`KNOWN_JAXLIB`): XLA aborts the
  process on an unknown flag in `XLA_FLAGS`, and the flag is experimental, so other versions get
  nothing rather than a crash.

GPU and TPU: XLA parses `XLA_FLAGS` into one `xla.DebugOptions` for every backend, and only the CPU
compiler reads this field, so on a jaxlib that defines it an accelerator run is unchanged (the CPU
client JAX also creates there compiles little). A GPU plugin (jax-cuda*-plugin) parses `XLA_FLAGS`
with its own copy of XLA; it is released in step with jaxlib, so the same version gate covers it.
Not checked on a GPU or TPU host in this session: only 0.10.x on the CPU is verified.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from typing import MutableMapping

YNN_FLAG_NAME = '--xla_cpu_experimental_ynn_fusion_type'
YNN_OFF = YNN_FLAG_NAME + '=-individual_convolution'
OPT_OUT_VAR = 'SUPERCONV_XLA_CPU_DEFAULTS'

# jaxlib (major, minor) releases whose bundled XLA defines the flag and has YNN convolutions on
# by default. Verified: 0.10.2 (the string is in jaxlib/libjax_common.so, and the flag changes
# the compiled program). Extend after checking a new release with `flag_in_jaxlib()`.
KNOWN_JAXLIB = ((0, 10),)


def _version_tuple(version: str) -> tuple[int, ...]:
  return tuple(int(p) for p in re.findall(r'\d+', version)[:3])


def jaxlib_version() -> str | None:
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return None


def flag_known(version: str | None) -> bool:
  """Whether jaxlib `version` is one where the flag is known to exist."""
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
  for path in glob.glob(os.path.join(root, '*.so')):
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
