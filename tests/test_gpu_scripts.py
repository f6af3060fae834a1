"""The prepared GPU fidelity script, run end to end at toy size on the CPU (TOY=1).

It must run every step the GPU session will run, in order, and leave the files the README's GPU
rows will be made from: the float32 probe's timing, the float32 Fig. 1a run, the twin (when torch
is installed) and the second bf16 seed.
"""

import json
import os
import subprocess

import pytest

from conftest import CIFAR10_ARCHIVE, ROOT


@pytest.mark.skipif(not os.path.exists(CIFAR10_ARCHIVE), reason='needs ../shared/data')
def test_gpu_fidelity_script_runs_at_toy_size(tmp_path):
  out = tmp_path / 'out'
  env = dict(os.environ, TOY='1', JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  result = subprocess.run(['bash', 'experiments/gpu_fidelity.sh', CIFAR10_ARCHIVE, str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  timing = json.loads((out / 'timing.json').read_text())
  assert timing['precision'] == 'highest' and timing['probe_images_per_sec'] > 0
  summaries = sorted(str(p.relative_to(out)) for p in out.glob('results/**/summary.json'))
  fp32 = [s for s in summaries if s.startswith('results/resnet56/') and 'float32' in s]
  bf16 = [s for s in summaries if s.startswith('results/resnet56/') and 'bfloat16' in s]
  assert fp32 and fp32[0].endswith('seed0/summary.json'), summaries
  assert bf16 and bf16[0].endswith('seed1/summary.json'), summaries
  twin = [s for s in summaries if s.startswith('results/torch_twin/fig1a_clr_toy/')]
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    assert twin, summaries
  except ImportError:
    assert '(b) skipped' in result.stdout
  log = (out / 'log.txt').read_text()
  assert log.index('(a) probe') < log.index('(a) Fig. 1a') < log.index('(b)') < log.index('(c)')
