"""The layout's rules (docs/architecture.md): imports run one way, the top files stay small, and
an NNX model trains and range-tests through the same engine as the Linen ones."""

from __future__ import annotations

import ast
import glob
import json
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from superconv import lr_range
from superconv import model_adapter
from superconv import models

from conftest import ROOT

PKG = os.path.join(ROOT, 'superconv')


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
  return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _imports(path: str) -> set[str]:
  """Every superconv module `path` imports, at module level or inside a function."""
  tree = ast.parse(open(path).read())
  package = _module_name(path).rsplit('.', 1)[0]
  if path.endswith('__init__.py'):
    package = _module_name(path)
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] +
                        ([base] if base else []))
      out.add(base)
      out.update(f'{base}.{a.name}' for a in node.names)  # `from superconv import train`
  return {m for m in out if m == 'superconv' or m.startswith('superconv.')}


GRAPH = {_module_name(p): _imports(p)
         for p in glob.glob(os.path.join(PKG, '**', '*.py'), recursive=True)}


def _touches(imports: set[str], target: str) -> bool:
  return any(m == target or m.startswith(target + '.') for m in imports)


def test_the_graph_was_read():
  # A parser that found nothing would make every rule below pass.
  assert _touches(GRAPH['superconv.train'], 'superconv.step')
  assert _touches(GRAPH['superconv.lr_range.sweep'], 'superconv.step')
  assert _touches(GRAPH['superconv.programs'], 'superconv.configure')


def test_the_two_programs_do_not_import_each_other():
  for module, imports in GRAPH.items():
    if module.startswith('superconv.train'):
      assert not _touches(imports, 'superconv.lr_range'), module
    if module.startswith('superconv.lr_range'):
      assert not _touches(imports, 'superconv.train'), module


PROGRAMS = ('superconv.train', 'superconv.lr_range', 'superconv.evaluate')


def test_nothing_below_the_programs_imports_them_or_the_entry_points():
  top = ('superconv.main', 'superconv.programs')
  for module, imports in GRAPH.items():
    if module in top:
      continue
    for target in top + ('superconv.configure',):
      assert not _touches(imports, target), (module, target)
    if not module.startswith(PROGRAMS):
      for program in PROGRAMS:
        assert not _touches(imports, program), (module, program)


@pytest.mark.parametrize('package', ['superconv.data', 'superconv.models', 'superconv.schedules',
                                     'superconv.storage'])
def test_lower_floors_import_only_their_own_package(package):
  for module, imports in GRAPH.items():
    if module == package or module.startswith(package + '.'):
      foreign = {m for m in imports if m != 'superconv' and not m.startswith(package)}
      assert not foreign, (module, foreign)


def test_top_files_stay_small():
  lines = lambda rel: len(open(os.path.join(PKG, rel)).read().splitlines())
  assert lines('main.py') <= 80
  assert lines('train.py') <= 350
  for path in glob.glob(os.path.join(PKG, 'lr_range', '*.py')):
    assert lines(os.path.relpath(path, PKG)) <= 450, path


# ----------------------------------------------------------------------------------------------
# NNX through the same engine


def test_every_docstring_example_is_collected():
  """Each module with a `>>>` example lies under one of pytest's testpaths (run as a doctest):
  the lr_range package's examples went unrun after lr_range.py became a package."""
  import tomllib  # pylint: disable=g-import-not-at-top
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    paths = tomllib.load(f)['tool']['pytest']['ini_options']['testpaths']
  assert all(os.path.exists(os.path.join(ROOT, p)) for p in paths), paths
  roots = [os.path.join(ROOT, p) for p in paths]
  with_examples = [
      path for folder in ('superconv', 'configs', 'experiments', 'benchmarks')
      for path in glob.glob(os.path.join(ROOT, folder, '**', '*.py'), recursive=True)
      if '>>> ' in open(path).read()]
  assert len(with_examples) >= 10, with_examples
  missing = [os.path.relpath(p, ROOT) for p in with_examples
             if not any(p == r or p.startswith(r + os.sep) for r in roots)]
  assert not missing, f'docstring examples pytest never runs: {missing}'


def test_nnx_lenet_trains_through_the_cli(run_cli, tmp_path):
  workdir = str(tmp_path / 'run')
  run_cli('--config=configs/lenet_fashion_mnist.py:tiny', '--config.model.name=nnx_lenet',
          '--config.model.dropout_rate=0.5', '--config.progress_bar=False', workdir=workdir,
          timeout=600, check=0)
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert summary['steps'] == 8 and 0.0 <= summary['final_eval_accuracy'] <= 1.0
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert all(np.isfinite(r['train_loss']) for r in rows if 'train_loss' in r)
  assert os.listdir(os.path.join(workdir, 'checkpoints'))


class _Net(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.dropout = nnx.Dropout(0.1, rngs=rngs)
    self.head = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    x = self.dropout(nnx.relu(self.bn(self.conv(x))))
    return self.head(x.mean((1, 2)))


def _problem(n=64, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n).astype(np.int32)
  images = rng.normal(0, 1, (n, 6, 6, 2)).astype(np.float32) + labels[:, None, None, None]
  return images, labels


def _range(model, variables=None):
  images, labels = _problem()
  return lr_range.range_test(
      model, lambda lr: optax.sgd(lr, momentum=0.9), variables, (images, labels),
      (images, labels), min_lr=0.0, max_lr=2.0, num_steps=24, batch_size=16,
      eval_every_steps=4, eval_batch_size=32)


def test_range_test_takes_an_nnx_module_and_leaves_it_untouched():
  net = _Net(nnx.Rngs(0))
  weights = lambda: jax.tree.map(np.array, [nnx.state(net, kind).to_pure_dict()
                                            for kind in (nnx.Param, nnx.BatchStat)])
  before = weights()
  result = _range(net)
  assert len(result.eval_accuracy) == 7 and result.eval_accuracy[-1] > result.eval_accuracy[0]
  jax.tree.map(np.testing.assert_array_equal, before, weights())
  assert result.settings['model'] == '_Net'


def test_range_test_takes_a_plain_function():
  w = {'w': jnp.zeros((2, 3)), 'b': jnp.zeros((3,))}

  def apply_fn(variables, x, train):
    del train
    p = variables['params']
    return x.mean((1, 2)) @ p['w'] + p['b']

  result = _range(model_adapter.PlainModel(apply_fn, {'params': w}))
  assert result.eval_accuracy[-1] > 0.5 > result.eval_accuracy[0] - 0.2
  np.testing.assert_array_equal(np.asarray(w['w']), 0.0)  # the caller's arrays are untouched


def test_the_adapter_refuses_what_it_cannot_train():
  with pytest.raises(TypeError, match='flax.linen.Module'):
    model_adapter.adapt(object())


def test_nnx_spec_builds_for_the_input_shape_and_counts_parameters():
  spec = models.create_model('nnx_lenet', num_classes=10, dropout_rate=0.5, bn_momentum=0.9)
  adapter = model_adapter.adapt(spec)
  params, stats = jax.jit(adapter.init)(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
  # LeNet's 431,080 plus BatchNorm's scale and bias after both convs: 2 x (20 + 50).
  assert models.param_count(params) == 431_080 + 140
  assert set(stats) == {'bn1', 'bn2'}
  logits, new_stats = adapter.apply(params, stats, jnp.ones((4, 28, 28, 1)), train=True,
                                    dropout_key=jax.random.PRNGKey(1))
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  assert not np.allclose(new_stats['bn1']['mean'], stats['bn1']['mean'])


_DEPRECATED = compile('with jax.sharding.Mesh(jax.devices()[:1], ("d",)):\n  pass',
                      'probe.py', 'exec')  # JAX deprecated `with mesh:` for jax.set_mesh


@pytest.mark.parametrize('module', ['superconv.probe', 'configs.probe', 'experiments.probe',
                                    'benchmarks.probe', 'research.probe'])
def test_a_deprecated_api_in_our_code_fails_the_test(module):
  # pyproject's filterwarnings: JAX's DeprecationWarning points at its caller; called from one
  # of this repository's modules, it is an error ...
  with pytest.raises(DeprecationWarning, match='with mesh'):
    exec(_DEPRECATED, {'__name__': module, 'jax': jax})  # pylint: disable=exec-used


def test_a_deprecated_api_in_another_library_is_not_our_failure():
  exec(_DEPRECATED, {'__name__': 'some_library.module', 'jax': jax})  # ... elsewhere, ignored
