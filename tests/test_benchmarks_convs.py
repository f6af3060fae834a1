"""research/cpu_perf/convs.py end to end at toy size: the conv table, the per-op breakdown,
scan/unroll (each measurement in its own subprocess)."""

import json

import pytest

from research.cpu_perf import convs

pytestmark = pytest.mark.integration  # JAX and PyTorch children per variant


def test_conv_table_toy(tmp_path):
  out = convs.main(['--toy', '--no-torch', '--out', str(tmp_path / 'c.json')])
  rows = json.loads((tmp_path / 'c.json').read_text())['rows']
  assert rows == json.loads(json.dumps(out['rows']))
  assert {(r['conv'], r['op']) for r in rows} == {
      (s[0], op) for s in convs.TOY_SHAPES for op in convs.OPS}
  for r in rows:
    assert r['jax default ms'] > 0 and r['jax ynn_off GFLOP/s'] > 0
  assert out['hardware']['jaxlib'] and out['uptime_before']


def test_flops_count():
  # 2 * N * Ho * Wo * Cout * Cin * k * k; VALID shrinks the output.
  assert convs._flops(('x', 2, 8, 8, 3, 4, 3, 'SAME')) == 2 * 2 * 8 * 8 * 4 * 3 * 9
  assert convs._flops(('x', 1, 28, 28, 1, 20, 5, 'VALID')) == 2 * 24 * 24 * 20 * 25


def test_torch_child_toy():
  pytest.importorskip('torch')
  r = convs.child_torch(convs.TOY_SHAPES[:1], 0.0)
  assert len(r) == 6 and all(v > 0 for v in r.values())


def test_breakdown_toy(tmp_path):
  out = convs.main(['--toy', '--breakdown', '--out', str(tmp_path / 'b.json')])
  r = out['variants']['ynn_off']
  classes = r['classes_ms']
  for cls in ('conv forward', 'conv input grad', 'conv weight grad', 'BatchNorm', 'optimizer'):
    assert classes.get(cls, 0) > 0, (cls, classes)
  assert set(classes) <= set(convs.CLASS_ORDER)
  # The classes share out the traced wall time.
  assert abs(sum(classes.values()) - r['step_ms_traced']) < 1e-6 * r['step_ms_traced'] + 1e-3
  # Each conv of resnet8 lands in exactly one direction: stem + 3 stages x 1 block x 2 convs
  # forward and weight gradient, one input gradient fewer (none for the stem's input).
  counts = r['class_counts']
  assert counts['conv forward'] == counts['conv weight grad'] == 7
  assert counts['conv input grad'] == 6


def test_scan_toy(tmp_path):
  out = convs.main(['--toy', '--scan', '--out', str(tmp_path / 's.json')])
  for case in out['cases']:
    assert [m for m, _ in convs.SCAN_MODES] == list(case['modes'])
    for m in case['modes'].values():
      assert m['ms_per_update'] > 0 and m['compile_s'] > 0
