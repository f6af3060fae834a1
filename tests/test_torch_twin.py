"""The PyTorch twin of the recipe (research/torch_twin, its model in benchmarks/torch_models.py)
against superconv, piece by piece.

Skipped without torch (the `bench` extra). The twin is written from Caffe's semantics, so where a
piece has a closed form both must give it, and where it has none (the network) both must have
the same parameters and the same function of the same weights.
"""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
from research.torch_twin import torch_twin  # pylint: disable=g-import-not-at-top
from superconv import models, schedules  # pylint: disable=g-import-not-at-top
from superconv.models import layers  # pylint: disable=g-import-not-at-top


@pytest.mark.parametrize('depth', [20, 56])
def test_both_forms_of_the_torch_resnet_have_superconv_parameter_count(depth):
  """The twin's (Caffe BN and pooling) and the throughput benchmark's (PyTorch's): one model."""
  flax_model = models.create_model(f'resnet{depth}', num_classes=10)
  variables = jax.eval_shape(lambda x: flax_model.init(jax.random.key(0), x, train=False),
                             jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
  want = layers.param_count(variables['params'])
  assert torch_models.param_count(torch_models.CaffeCifarResNet(depth)) == want
  fast = torch_models.create(f'resnet{depth}')
  assert torch_models.param_count(fast) == want
  assert not any(isinstance(m, torch_models.CaffeBatchNorm) for m in fast.modules())
  assert fast(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_twin_clr_equals_superconv_triangular():
  twin = torch_twin.clr(0.1, 1.0, 100)
  ours = schedules.triangular(0.1, 1.0, 100)
  for k in (0, 1, 37, 99, 100, 101, 150, 199, 200, 250):
    assert twin(k) == pytest.approx(float(ours(k)), rel=1e-6)


def test_twin_batchnorm_after_one_update_is_that_batch():
  bn = torch_models.CaffeBatchNorm(3, fraction=0.999, group=4)
  x = torch.randn(8, 3, 5, 5) * 3 + 2
  bn.train()
  bn(x)
  g = x.numpy().reshape(2, 4, 3, 5, 5)
  mean = g.mean(axis=(1, 3, 4)).mean(0)
  var = g.var(axis=(1, 3, 4), ddof=1).mean(0)
  np.testing.assert_allclose(bn.mean_sum / bn.count, mean, rtol=1e-5)
  np.testing.assert_allclose(bn.var_sum / bn.count, var, rtol=1e-5)


def test_twin_caffe_pool_matches_superconv():
  x = np.random.default_rng(0).normal(size=(2, 16, 9, 9)).astype(np.float32)
  twin = torch_models.caffe_ave_pool_3x3_s2(torch.from_numpy(x)).numpy()
  ours = np.asarray(layers.caffe_avg_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), 3, 2))
  np.testing.assert_allclose(twin, ours.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-6)


def test_twin_weight_decay_mask_is_superconv_paper_mask():
  from superconv import optim  # pylint: disable=g-import-not-at-top
  twin = torch_models.CaffeCifarResNet(8)
  decayed = sum(p.numel() for p, _, d in torch_twin.param_groups(twin) if d)
  doubled = sum(p.numel() for p, m, _ in torch_twin.param_groups(twin) if m == 2.0)
  flax_model = models.create_model('resnet8', num_classes=10)
  params = jax.eval_shape(lambda x: flax_model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))['params']
  mask = optim.decay_mask(params, decay_bias=False, decay_bn=True, decay_fc_bias=True)
  ours = sum(int(np.prod(p.shape)) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
             if m)
  assert decayed == ours
  biases = optim._bias_mask(params)  # pylint: disable=protected-access
  assert doubled == sum(int(np.prod(p.shape)) for p, b in
                        zip(jax.tree.leaves(params), jax.tree.leaves(biases)) if b)


def test_twin_trains_at_toy_size(tmp_path):
  rng = np.random.default_rng(0)
  labels = np.arange(64) % 10
  images = np.clip(rng.normal(100, 30, (64, 32, 32, 3)) + labels[:, None, None, None] * 12,
                   0, 255).astype(np.uint8)
  data = (images, labels.astype(np.int32), images[:40], labels[:40].astype(np.int32),
          images.mean(0).astype(np.float32))
  args = torch_twin.parser().parse_args(['--data', 'fake', '--depth', '8', '--steps', '6',
                                         '--batch', '16',
                                         '--step-size', '3', '--eval-every', '3'])
  summary = torch_twin.train(args, 0, data, str(tmp_path / 'seed0'))
  assert summary['steps'] == 6 and 0.0 <= summary['final_eval_accuracy'] <= 1.0
  rows = (tmp_path / 'seed0' / 'metrics.jsonl').read_text().splitlines()
  assert len(rows) == 2


def test_the_recipe_is_the_options_without_where_data_and_runs_are():
  argv = ['--data', '/d.tar.gz', '--subset', '2500', '--batch', '64', '--seeds', '0', '1',
          '--out=/r/s', '--steps', '150', '--name', 'n']
  assert torch_twin.recipe(argv) == '--subset 2500 --batch 64 --steps 150'
