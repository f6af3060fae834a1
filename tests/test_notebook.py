"""Runs notebooks/superconvergence.ipynb headlessly at a tiny budget (nbclient, a fresh kernel).

Parameters are injected papermill-style: a cell placed right after the one tagged 'parameters'
overrides them. The data are real CIFAR-10 images from the local archive (skipped when absent),
a few per class written as an image folder, so that the many test-set evaluations of a range test
cost nothing (the full 10,000-image test split takes ~7 s per evaluation on this CPU). The kernel
runs JAX on the CPU; the test takes ~40 s on 2 cores, nearly all of it XLA compiling.
"""

import base64
import json
import os
import re

import numpy as np
import pytest

from tests.conftest import CIFAR10_ARCHIVE

pytestmark = pytest.mark.integration  # a kernel in a subprocess

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

NOTEBOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'notebooks',
                        'superconvergence.ipynb')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
           'truck')


def small_cifar10(root, per_class: dict) -> str:
  """`root/{train,test}/<class>/<i>.png`: the first per_class[split] images of each class."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from superconv.data import sources  # pylint: disable=g-import-not-at-top
  data = default.get_config().data
  data.source, data.path = 'files', CIFAR10_ARCHIVE  # decoded once, then read from the cache
  for split, n in per_class.items():
    images, labels = sources.load_split(data, split)
    for k, name in enumerate(CLASSES):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i, j in enumerate(np.flatnonzero(labels == k)[:n]):
        Image.fromarray(images[j]).save(folder / f'{i}.png')  # lossless: the archive's pixels
  return str(root)


def inject_parameters(nb, values: dict) -> int:
  """Inserts a cell assigning `values` right after the 'parameters' cell; returns its index."""
  tagged = [i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', [])]
  assert len(tagged) == 1, 'the notebook needs exactly one cell tagged "parameters"'
  source = '\n'.join(f'{k} = {v!r}' for k, v in values.items())
  cell = nbformat.v4.new_code_cell(source, metadata={'tags': ['injected-parameters']})
  nb.cells.insert(tagged[0] + 1, cell)
  return tagged[0] + 1


def test_notebook_has_no_outputs_and_every_injected_name_is_a_parameter():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, 'commit the notebook cleared'
  params = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
  names = {line.split('=')[0].strip() for line in params.source.splitlines()
           if '=' in line and not line.lstrip().startswith('#')}
  assert {'MODEL', 'BATCH_SIZE', 'NUM_STEPS', 'RANGE_STEPS', 'DATA_PATH', 'OUT_DIR',
          'TRAIN_SUBSET', 'EVAL_EVERY', 'RANGE_EVAL_EVERY', 'PROGRESS', 'CACHE_DIR', 'DTYPE',
          'BN_GROUPS', 'TENSORBOARD', 'INSTALL_FROM'} <= names


def test_colab_badge_and_install_point_at_the_same_repository():
  """No public address is recorded yet: no badge, and the install cell asks for one. Once a
  badge is added, it must point at the repository INSTALL_FROM installs."""
  nb = nbformat.read(NOTEBOOK, as_version=4)
  intro = nb.cells[0]
  assert intro.cell_type == 'markdown'
  params = next(c for c in nb.cells if 'parameters' in c.metadata.get('tags', []))
  install = re.search(r"INSTALL_FROM = '([^']*)'", params.source).group(1)
  badge = re.search(r'\(https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/[^/]+/'
                    r'(notebooks/[^)]+\.ipynb)\)', intro.source)
  if badge is None:
    assert 'colab.research.google.com' not in intro.source
    assert '<owner>' in install  # the install cell stops with a request to set it
    return
  repo, path = badge.groups()
  assert '<' not in repo, 'a badge names a real repository, not a placeholder'
  assert path == 'notebooks/' + os.path.basename(NOTEBOOK)
  assert install == f'superconv @ git+https://github.com/{repo}', (install, repo)


@pytest.mark.skipif(not os.path.exists(CIFAR10_ARCHIVE), reason='no local CIFAR-10 archive')
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  out = tmp_path / 'runs'
  data_path = small_cifar10(tmp_path / 'cifar10', {'train': 50, 'test': 20})
  values = dict(MODEL='resnet8', BATCH_SIZE=32, NUM_STEPS=16, RANGE_STEPS=12,
                RANGE_EVAL_EVERY=4, RANGE_EVAL_EXAMPLES=10, EVAL_EVERY=8, TRAIN_SUBSET=0, DATA_PATH=data_path,
                DATA_IS_PART=True,  # 50 / 20 images per class, not the whole set
                CACHE_DIR=str(tmp_path / 'cache'), OUT_DIR=str(out), PROGRESS=False,
                TENSORBOARD=False)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  inject_parameters(nb, values)
  # The kernel inherits this process's environment: JAX on the CPU, one device, no GPU probing.
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                                   resources={'metadata': {'path': str(tmp_path)}})
  client.execute()

  # Both plots were written and shown.
  for path in (out / 'lr_range' / 'lr_range.png', out / 'accuracy.png'):
    assert path.read_bytes()[:8] == PNG_MAGIC, path
  shown = [base64.b64decode(o['data']['image/png']) for c in nb.cells if c.cell_type == 'code'
           for o in c.outputs if 'image/png' in o.get('data', {})]
  assert len(shown) == 2 and all(s[:8] == PNG_MAGIC for s in shown)

  # The range test swept 0 -> 3 over 12 updates with 4 evaluations (0, 4, 8, 12).
  sweep = json.loads((out / 'lr_range' / 'lr_range.json').read_text())
  assert sweep['eval']['step'] == [0, 4, 8, 12]
  assert sweep['eval']['lr'][-1] == pytest.approx(3.0)
  # Both runs trained the same budget with their own schedules.
  for name, schedule in (('1cycle', 'one_cycle'), ('step', 'multistep')):
    config = json.loads((out / name / 'config.json').read_text())
    summary = json.loads((out / name / 'summary.json').read_text())
    assert (config['schedule']['name'], config['model']['name'], summary['steps']) == (
        schedule, 'resnet8', 16)
    # The CPU size's dtype (DTYPE was not injected) and BN_GROUPS=8 groups of the batch of 32.
    assert (config['model']['dtype'], config['model']['virtual_batch_size']) == ('float32', 4)
    assert summary['final_eval_accuracy'] is not None
    evals = [r for r in map(json.loads, (out / name / 'metrics.jsonl').read_text().splitlines())
             if 'eval_accuracy' in r]
    assert [(r['step'], r['eval_examples']) for r in evals] == [(8, 200), (16, 200)]
  step_lrs = {r['step']: r['lr'] for r in map(json.loads, (out / 'step' / 'metrics.jsonl')
                                                  .read_text().splitlines()) if 'lr' in r}
  # multistep 0.1, x0.1 at updates 8 and 12: the LR of the update before each log point.
  assert step_lrs[8] == pytest.approx(0.1) and step_lrs[16] == pytest.approx(1e-3)
  one_cycle = json.loads((out / '1cycle' / 'config.json').read_text())
  printed = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                    for o in c.outputs)
  kept = re.search(r'No reliable range-test reading; 1cycle keeps max_lr=(\S+)\.', printed)
  if sweep['suggestion']['reliable']:  # the range test's reading set the 1cycle peak
    assert kept is None
    assert one_cycle['schedule']['max_lr'] == pytest.approx(sweep['suggestion']['max_lr'])
  else:  # (at this size, usually) the notebook says so and the run keeps the config's peak
    assert kept, printed[-2000:]
    assert one_cycle['schedule']['max_lr'] == pytest.approx(float(kept.group(1)))
