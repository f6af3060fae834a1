"""The examples of docs/lr_range.md, each run at toy size: trainings superconv does not own, fed
to `lr_range.find`, and the image-classifier door. In-process, real data (the standard
library's own source; Fashion-MNIST from the Debian package where installed)."""

import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_lm_example_reads_a_transformer_on_held_out_loss(capsys):
  from examples import lm_range_test  # pylint: disable=g-import-not-at-top
  out = lm_range_test.main(['--toy'])
  r, run = out['result'], out['run']
  assert (r.settings['reading'], r.settings['metric'], r.settings['maximize']) == (
      'eval', 'loss', False)
  held = r.eval_metrics['loss']
  assert len(held) == 11 and held.min() < held[0] - 0.5    # the held-out loss fell
  assert r.reliable and r.settings['identity']['optimizer']['factory'] == 'adamw'
  assert np.isfinite(run['held_out_loss']) and run['held_out_loss'] < np.log(256)
  assert 'held-out loss' in capsys.readouterr().out


def test_nnx_classifier_fed_by_grain_with_its_own_loss():
  pytest.importorskip('grain')
  from examples import nnx_grain_range_test as ex  # pylint: disable=g-import-not-at-top
  r = ex.main(['--toy'])
  assert r.settings['metric'] == 'accuracy' and r.settings['maximize'] is True
  assert r.reliable and r.suggestion['method'] in ('peak', 'fall')
  acc = r.eval_metrics['accuracy']
  assert acc[0] < 0.35 < acc.max()      # from chance (4 classes) to well above it
  assert r.settings['identity']['input_shape'] == {'label': [], 'x': [ex.SNIPPET]}


def test_image_classifier_example_through_range_test():
  from examples import image_range_test as ex  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(ex.DEFAULT_DATA, 'train-images-idx3-ubyte.gz')):
    pytest.skip('Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)')
  r = ex.main(['--toy'])
  assert r.settings['identity']['model'] == 'LeNet'
  assert r.settings['identity']['input_shape'] == [28, 28, 1]
  assert r.reliable and r.eval_accuracy.max() > 0.5


def test_lm_study_writes_its_results_layout(tmp_path):
  from examples import lm_study  # pylint: disable=g-import-not-at-top
  report = lm_study.main(['--toy', '--out', str(tmp_path)])
  manifest = json.loads((tmp_path / 'manifest.json').read_text())
  assert manifest['study'] == 'lm_range' and set(manifest['arms']) == {
      'sweep', 'fed', 'peak0.001', 'peak0.01'}
  for arm, spec in manifest['arms'].items():
    assert os.path.exists(spec['config'])
    for seed in spec['seeds']:
      folder = tmp_path / arm / f'seed{seed}'
      assert {'run.json', 'summary.json', 'metrics.jsonl'} <= set(os.listdir(folder))
  assert (tmp_path / 'sweep' / 'seed0' / 'lr_range.json').exists()
  assert (tmp_path / 'study.png').stat().st_size > 10_000
  fed = json.loads((tmp_path / 'fed' / 'seed0' / 'summary.json').read_text())
  assert fed['held_out_loss'] == report['fed_held_out_loss'][0]
  assert report['grid_best_peak'] in (0.001, 0.01) and report['sweep_cpu_seconds'] > 0
