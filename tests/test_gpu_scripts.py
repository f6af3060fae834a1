"""The prepared GPU fidelity script, run end to end at toy size on the CPU (TOY=1).

It must run every step the GPU session will run, in order, and leave the files the docs' GPU
rows will be made from: the float32 probe's timing, the float32 Fig. 1a run, the twin (when torch
is installed) and the second bf16 seed.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import CIFAR10_ARCHIVE, ROOT

pytestmark = pytest.mark.integration  # whole shell pipelines at toy size


@pytest.mark.skipif(not os.path.exists(CIFAR10_ARCHIVE), reason='needs ../shared/data')
def test_gpu_fidelity_script_runs_at_toy_size(tmp_path):
  out = tmp_path / 'out'
  # The script calls `python`: this interpreter's, whether or not its venv is activated.
  path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')
  env = dict(os.environ, TOY='1', JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, PATH=path)
  result = subprocess.run(['bash', 'research/gpu/fidelity.sh', CIFAR10_ARCHIVE, str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  timing = json.loads((out / 'timing.json').read_text())
  assert timing['precision'] == 'highest' and timing['probe_images_per_sec'] > 0
  summaries = sorted(str(p.relative_to(out)) for p in out.glob('results/**/summary.json'))
  fp32 = [s for s in summaries if s.startswith('results/fig1a_fidelity/clr_fp32/')]
  bf16 = [s for s in summaries if s.startswith('results/fig1a_fidelity/clr_bf16/')]
  assert fp32 and fp32[0].endswith('seed0/summary.json'), summaries
  assert bf16 and bf16[0].endswith('seed1/summary.json'), summaries
  twin = [s for s in summaries if s.startswith('results/fig1a_fidelity/twin_fp32/')]
  try:
    import torch  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    assert twin, summaries
  except ImportError:
    assert '(b) skipped' in result.stdout
  log = (out / 'log.txt').read_text()
  assert log.index('(a) probe') < log.index('(a) Fig. 1a') < log.index('(b)') < log.index('(c)')


VARIANTS = ['baseline', 'packed', 'cmdbuf_while', 'cmdbuf_unroll', 'fp32', 'fp32_nhwc']


def test_gpu_perf_script_runs_at_toy_size(tmp_path):
  """research/gpu/perf.sh at toy size: every variant a row, the profile's breakdown, the
  dispatch and range-test files, Fig. 1a with the fastest variant; no GPU flag reaches XLA:CPU."""
  out = tmp_path / 'out'
  # The script calls `python`: this interpreter's, whether or not its venv is activated.
  path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')
  env = dict(os.environ, TOY='1', JAX_PLATFORMS='cpu', PYTHONPATH=ROOT, PATH=path)
  result = subprocess.run(['bash', 'research/gpu/perf.sh', '-', str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  rows = [json.loads(l) for l in (out / 'perf.jsonl').read_text().splitlines()]
  assert [r['variant'] for r in rows] == VARIANTS + ['profile'], rows
  for r in rows:
    assert 'error' not in r, r
    assert 'xla_gpu' not in r['xla_flags'], r['xla_flags']  # skipped on the CPU
    assert r['runs'][0]['images_per_sec'] > 0
  by = {r['variant']: r for r in rows}
  assert not by['baseline']['runs'][0]['packed_state'] and by['packed']['runs'][0]['packed_state']
  assert by['fp32_nhwc']['dtype'] == 'float32' and by['cmdbuf_while']['dtype'] == 'bfloat16'
  breakdown = by['profile']['runs'][0]['kernel_breakdown']
  assert 'error' not in breakdown and breakdown['top'] and breakdown['total_us'] > 0, breakdown
  best = json.loads((out / 'best.json').read_text())
  assert best['variant'] in VARIANTS[:4]
  dispatch = json.loads((out / 'dispatch.json').read_text())['dispatch'][0]
  assert dispatch['packed']['identity_ms'] > 0 and dispatch['pytree']['update_ms'] > 0
  rt = json.loads((out / 'range_test.json').read_text())['range_test'][0]
  assert rt['train_updates_per_sec'] > 0 and len(rt['sweep_seconds']) == rt['reps']
  # At toy size the sweep's extra updates can fall within compile jitter: unresolved, never < 0.
  assert rt['sweep_updates_per_sec'] is None or rt['sweep_updates_per_sec'] > 0
  assert list(out.glob('results/fig1a_perf/clr_bf16_best/seed0/summary.json')), list(
      out.rglob('*.json'))
  log = (out / 'log.txt').read_text()
  order = ['== [', 'baseline', 'fp32_nhwc', 'profile of', 'dispatch:', 'range test:', 'Fig. 1a']
  assert [log.index(s) for s in order] == sorted(log.index(s) for s in order)
