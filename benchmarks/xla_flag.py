r"""The XLA:CPU flag superconv sets (`superconv.platform.YNN_OFF`): does it help on this jaxlib?

  python -m benchmarks.xla_flag --out benchmarks/results/xla_flag_<jaxlib>.json

Checks what `superconv.platform.KNOWN_JAXLIB` needs before a release is added: the installed
jaxlib defines the flag, the flag changes the compiled program (a convolution's weight gradient
compiles to a YNNPACK fusion without it and to none with it), and superconv's train step
(`python -m benchmarks.throughput`, no PyTorch) is faster with it. Each model runs with and
without the flag in its own process, alternating, `--rounds` times, in one window on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

from benchmarks import machine
from superconv import platform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The weight gradient of a 3x3 convolution at a CIFAR ResNet stage's size; prints how many
# YNNPACK fusions XLA:CPU compiled it into.
YNN_PROBE = """
import jax, jax.numpy as jnp
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
grad = jax.jit(jax.grad(lambda x, w: jnp.sum(jax.nn.relu(conv(x, w)) ** 2), argnums=1))
text = grad.lower(jnp.ones((128, 32, 32, 16)), jnp.ones((3, 3, 16, 16))).compile().as_text()
print(text.count('__ynn_fusion'))
"""


def _env(flags: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', platform.OPT_OUT_VAR)}
  env.update(XLA_FLAGS=flags, JAX_PLATFORMS='cpu', PYTHONPATH=os.pathsep.join(
      p for p in (ROOT, os.environ.get('PYTHONPATH', '')) if p))
  return env


def ynn_fusions(flags: str) -> int:
  """YNNPACK fusions in the probe's compiled program, compiled with `XLA_FLAGS=flags`."""
  done = subprocess.run([sys.executable, '-c', YNN_PROBE], env=_env(flags), capture_output=True,
                        text=True, timeout=300, check=True)
  return int(done.stdout)


def step_images_per_sec(model: str, batch: int, steps: int, flags: str) -> tuple[float, float]:
  """images/s of superconv's train step (benchmarks.throughput) with `XLA_FLAGS=flags`, and the
  CPU seconds its whole process took (start-up and compilation included): on a shared machine
  the work done, where the wall time also counts the other jobs' share of the cores."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'run.jsonl')
    subprocess.run([sys.executable, '-m', 'benchmarks.throughput', f'--model={model}',
                    f'--batch={batch}', f'--steps={steps}', '--torch=', f'--out={out}'],
                   cwd=ROOT, env=_env(flags), check=True, timeout=1800, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    with open(out) as f:
      return json.loads(f.readline())['runs'][0]['images_per_sec'], cpu_s


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--models', default='resnet20:128:10,lenet:128:40',
                 help='model:batch:timed updates, comma-separated')
  p.add_argument('--rounds', type=int, default=2, help='alternating with/without rounds')
  p.add_argument('--out', default='', help='write the record (JSON) here')
  a = p.parse_args(argv)
  record = {'command': 'python -m benchmarks.xla_flag ' + ' '.join(
                argv if argv is not None else sys.argv[1:]),
            'pythonpath': os.environ.get('PYTHONPATH', ''),  # e.g. another jax/jaxlib on top
            'flag': platform.YNN_OFF, 'hardware': machine.hardware(),
            'uptime_before': machine.uptime(),
            'flag_in_jaxlib': platform.flag_in_jaxlib(),
            'ynn_fusions': {'default': ynn_fusions(''), 'flag': ynn_fusions(platform.YNN_OFF)},
            'models': []}
  print(f"jaxlib {record['hardware']['jaxlib']}: flag defined {record['flag_in_jaxlib']}, "
        f"YNN fusions in the probe {record['ynn_fusions']['default']} -> "
        f"{record['ynn_fusions']['flag']}", flush=True)
  for spec in a.models.split(','):
    model, batch, steps = spec.split(':')
    runs, cpu = {'default': [], 'flag': []}, {'default': [], 'flag': []}
    for _ in range(a.rounds):
      for name, flags in (('default', ''), ('flag', platform.YNN_OFF)):
        ips, cpu_s = step_images_per_sec(model, int(batch), int(steps), flags)
        runs[name].append(ips)
        cpu[name].append(cpu_s)
    row = {'model': model, 'batch': int(batch), 'steps': int(steps), 'images_per_sec': runs,
           'process_cpu_s': cpu, 'median': {k: statistics.median(v) for k, v in runs.items()}}
    row['speedup'] = row['median']['flag'] / row['median']['default']
    record['models'].append(row)
    print(f"{model}, batch {batch}: {row['median']['default']:.1f} -> "
          f"{row['median']['flag']:.1f} img/s ({row['speedup']:.2f}x)", flush=True)
  record['uptime_after'] = machine.uptime()
  if a.out:
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, 'w') as f:
      f.write(json.dumps(record, indent=1) + '\n')
  return record


if __name__ == '__main__':
  main()
