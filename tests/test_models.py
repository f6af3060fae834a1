"""Tests of superconv.models: exact parameter counts, shapes/dtypes, BatchNorm maths, shortcuts."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from superconv import models
from superconv.models import layers

# Exact parameter counts (params only; BN running statistics live in 'batch_stats').
# The paper's ResNets match digest §5.4 (conv weights + conv biases + BN scale/shift + FC);
# LeNet is the Caffe MNIST example (431,080); ResNet-50 equals torchvision's resnet50.
PARAM_COUNTS = {
    'resnet20': 224_042,
    'resnet56': 808_682,
    'resnet110': 1_685_642,
    'resnet8': 29_162,
    'resnet20_a': 269_722,
    'resnet56_a': 853_018,
    'resnet110_a': 1_727_962,
    'resnet8_a': 75_290,
    'wide_resnet32': 5_903_626,
    'wide_resnet8': 863_626,
    'bottleneck_resnet56': 586_826,
    'bottleneck_resnet11': 126_506,
    'resnext56': 581_194,
    'resnext11': 116_394,
    'densenet40': 1_019_722,
    'densenet10': 37_762,
    'lenet': 431_080,
    'resnet50': 25_557_032,
    'inception_resnet_v2': 55_843_464,
    'resnet_imagenet_tiny': 130_962,
    'inception_resnet_tiny': 54_730,
}



@pytest.fixture(autouse=True, scope='module')
def _fast_compiles():
  """XLA optimizations cost most of these tests' time on CPU and change no result checked."""
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


_IMAGENET = ('resnet50', 'inception_resnet_v2')
_SMALL = ('resnet8', 'resnet8_a', 'wide_resnet8', 'bottleneck_resnet11', 'resnext11',
          'densenet10', 'lenet', 'resnet_imagenet_tiny', 'inception_resnet_tiny')


def _input_shape(name, batch=1):
  if name == 'lenet':
    return (batch, 28, 28, 1)
  if name == 'resnet50':
    return (batch, 224, 224, 3)
  if name == 'inception_resnet_v2':
    return (batch, 299, 299, 3)
  return (batch, 32, 32, 3)


def _abstract_variables(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


@functools.lru_cache(maxsize=None)
def _abstract_registered(name):
  num_classes = 1000 if name in _IMAGENET else 10
  return _abstract_variables(models.create_model(name, num_classes=num_classes),
                             _input_shape(name))


def _init(model, x):
  # Jitted init with the 'rbg' PRNG: compiling threefry for every parameter of a model takes
  # tens of seconds on a 2-core CPU, rbg a few.
  return jax.jit(functools.partial(model.init, train=False))(jax.random.key(0, impl='rbg'), x)


def _train_apply(model, variables, x, **kwargs):
  kwargs.setdefault('mutable', ['batch_stats'])
  fn = functools.partial(model.apply, train=True, **kwargs)
  return jax.jit(fn)(variables, x)


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_param_count(name):
  variables = _abstract_registered(name)  # shapes only: nothing runs
  assert models.param_count(variables['params']) == PARAM_COUNTS[name]


def test_every_registered_model_has_a_param_count():
  assert set(models.MODELS) == set(PARAM_COUNTS)


def test_paper_resnet_counts_are_the_digest_numbers():
  # Guards the pinned table itself against an edit that "fixes" the code's numbers.
  assert (PARAM_COUNTS['resnet20'], PARAM_COUNTS['resnet56'],
          PARAM_COUNTS['resnet110']) == (224_042, 808_682, 1_685_642)


def test_resnet56_param_breakdown():
  """802,224 conv weights + 1,936 conv biases + 3,872 BN scale/shift + 650 FC (digest §5.4)."""
  params = _abstract_registered('resnet56')['params']
  flat = flax.traverse_util.flatten_dict(params)
  total = lambda pred: sum(int(np.prod(v.shape)) for k, v in flat.items() if pred(k))
  is_bn = lambda k: any(p.startswith('bn') for p in k[:-1])
  assert total(lambda k: k[-1] == 'kernel' and k[-2] != 'fc') == 802_224
  assert total(lambda k: k[-1] == 'bias' and k[-2].startswith('conv')) == 1_936
  assert total(is_bn) == 3_872
  assert total(lambda k: k[-2] == 'fc') == 650


@pytest.mark.parametrize('name', _SMALL)
def test_forward_shapes_and_dtypes(name):
  model = models.create_model(name, num_classes=7)
  x = jnp.ones(_input_shape(name, batch=2))
  variables = _init(model, x)
  logits, updates = _train_apply(model, variables, x, rngs={'dropout': jax.random.key(1)})
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  eval_logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  assert eval_logits.shape == (2, 7) and eval_logits.dtype == jnp.float32
  # Train mode changes the running statistics of every model that has BN.
  if variables.get('batch_stats'):
    before = jax.tree_util.tree_leaves(variables['batch_stats'])
    after = jax.tree_util.tree_leaves(updates['batch_stats'])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_bfloat16_compute_keeps_float32_params_and_stats():
  model = models.create_model('resnet8', num_classes=10, dtype='bfloat16')
  x = jnp.ones((2, 32, 32, 3))
  variables = _init(model, x)
  for leaf in jax.tree_util.tree_leaves(variables):
    assert leaf.dtype == jnp.float32
  logits, state = jax.eval_shape(functools.partial(
      model.apply, train=True, mutable=['batch_stats', 'intermediates'],
      capture_intermediates=True), variables, x)
  assert logits.dtype == jnp.float32
  for leaf in jax.tree_util.tree_leaves(state['batch_stats']):
    assert leaf.dtype == jnp.float32
  conv_out = state['intermediates']['stage1_block1']['conv1']['__call__'][0]
  assert conv_out.dtype == jnp.bfloat16


def test_bn_modules_are_named_bn_and_own_all_scales():
  """The optimizer's weight-decay mask finds BN parameters by module names starting 'bn'."""
  for name in models.MODELS:
    variables = _abstract_registered(name)
    for path in flax.traverse_util.flatten_dict(variables.get('batch_stats', {})):
      assert path[-2].startswith('bn'), (name, path)
    for path in flax.traverse_util.flatten_dict(variables['params']):
      assert path[-1] in ('kernel', 'bias', 'scale'), (name, path)
      if path[-1] == 'scale' or path[-2].startswith('bn'):
        assert path[-2].startswith('bn') and path[-1] in ('scale', 'bias'), (name, path)


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------


def test_create_model_depth_patterns_and_kwargs():
  model = models.create_model('resnet32', num_classes=100, bn_momentum=0.9, bn_epsilon=1e-3,
                              virtual_batch_size=4, dropout_rate=0.2, dtype=jnp.bfloat16)
  assert (type(model).__name__, model.depth, model.num_classes) == ('CaffeResNet', 32, 100)
  assert (model.bn_momentum, model.bn_epsilon, model.virtual_batch_size,
          model.dropout_rate, model.dtype) == (0.9, 1e-3, 4, 0.2, jnp.bfloat16)
  assert models.create_model('resnet14_a', num_classes=10).depth == 14
  assert models.create_model('wide_resnet14', num_classes=10).depth == 14
  assert models.create_model('bottleneck_resnet20', num_classes=10).depth == 20
  resnext = models.create_model('resnext20', num_classes=10)
  assert (resnext.depth, resnext.groups) == (20, 32)
  assert models.create_model('densenet22', num_classes=10).depth == 22
  # Options a model lacks are ignored.
  lenet = models.create_model('lenet', num_classes=10, bn_momentum=0.9, dropout_rate=0.5)
  assert type(lenet).__name__ == 'LeNet'


@pytest.mark.parametrize('name', ['resnet21', 'resnet2', 'bottleneck_resnet56x', 'resnext12',
                                  'densenet41', 'vgg16', 'wide_resnet9'])
def test_create_model_rejects_bad_names(name):
  with pytest.raises(ValueError, match='resnet56' if name == 'vgg16' else 'depth|valid'):
    models.create_model(name, num_classes=10)


def test_create_model_rejects_bad_dtype():
  with pytest.raises(ValueError, match='dtype'):
    models.create_model('resnet8', num_classes=10, dtype='float64')


# ------------------------------------------------------------------------------------------
# BatchNorm
# ------------------------------------------------------------------------------------------


def _bn_apply(bn, variables, x, train=True):
  return bn.apply(variables, x, train=train, mutable=['batch_stats'] if train else False)


def test_batchnorm_train_normalizes_each_channel():
  x = jax.random.normal(jax.random.key(1), (16, 4, 4, 3)) * jnp.array([1., 5., 0.1]) + jnp.array(
      [3., -2., 10.])
  bn = layers.BatchNorm()
  variables = bn.init(jax.random.key(0), x, train=False)
  y, _ = _bn_apply(bn, variables, x)
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  var = x.var(axis=(0, 1, 2))
  np.testing.assert_allclose(y.var(axis=(0, 1, 2)), var / (var + 1e-5), rtol=1e-4)


def _stats(mean_sum, var_sum, count):
  return {'mean_sum': jnp.asarray(mean_sum, jnp.float32), 'var_sum': jnp.asarray(var_sum, jnp.float32),
          'count': jnp.asarray(count, jnp.float32)}


def test_batchnorm_closed_form_update_and_eval():
  # One channel, B=2, 1x2 pixels: values 1, 2, 3, 6 -> mean 3, biased var 3.5, unbiased 14/3.
  x = jnp.array([[[[1.], [2.]]], [[[3.], [6.]]]])
  bn = layers.BatchNorm(momentum=0.9, epsilon=1e-5)
  variables = bn.init(jax.random.key(0), x, train=False)
  np.testing.assert_array_equal(variables['batch_stats']['mean_sum'], [0.0])
  np.testing.assert_array_equal(variables['batch_stats']['var_sum'], [0.0])
  np.testing.assert_array_equal(variables['batch_stats']['count'], 0.0)
  y, upd = _bn_apply(bn, variables, x)
  np.testing.assert_allclose(y.ravel(), (np.array([1., 2., 3., 6.]) - 3) / np.sqrt(3.5 + 1e-5),
                             rtol=1e-6)
  # Caffe: sums <- 0.9 * sums + stat, count <- 0.9 * count + 1.
  np.testing.assert_allclose(upd['batch_stats']['mean_sum'], [3.0], rtol=1e-6)
  np.testing.assert_allclose(upd['batch_stats']['var_sum'], [14 / 3], rtol=1e-6)
  np.testing.assert_allclose(upd['batch_stats']['count'], 1.0)
  # A second batch (values 0, 0, 0, 4: mean 1, unbiased var 4): the count-weighted mean.
  x2 = jnp.array([[[[0.], [0.]]], [[[0.], [4.]]]])
  _, upd2 = _bn_apply(bn, {**variables, **upd}, x2)
  mean, var = layers.running_stats(upd2['batch_stats'])
  np.testing.assert_allclose(mean, [(0.9 * 3 + 1) / 1.9], rtol=1e-6)
  np.testing.assert_allclose(var, [(0.9 * 14 / 3 + 4) / 1.9], rtol=1e-6)

  # Eval: sums / count and the learned scale/shift, never the batch's own statistics.
  variables = {'params': {'scale': jnp.array([3.]), 'bias': jnp.array([1.])},
               'batch_stats': _stats([1.0], [2.0], 0.5)}  # mean 2, var 4
  y = bn.apply(variables, x, train=False)
  np.testing.assert_allclose(y.ravel(), 3 * (np.array([1., 2., 3., 6.]) - 2) / np.sqrt(4 + 1e-5)
                             + 1, rtol=1e-6)
  # Before any update (count 0): mean 0, var 1, not a division by zero.
  fresh = bn.init(jax.random.key(0), x, train=False)
  np.testing.assert_allclose(bn.apply(fresh, x, train=False).ravel(),
                             np.array([1., 2., 3., 6.]) / np.sqrt(1 + 1e-5), rtol=1e-6)


@pytest.mark.parametrize('momentum', [0.95, 0.999])
def test_batchnorm_running_stats_after_one_update_are_that_batch(momentum):
  """Caffe's estimator is exact from the first update whatever the fraction (a plain EMA from
  (0, 1) would give 0.001 x the mean at 0.999)."""
  x = jax.random.normal(jax.random.key(3), (12, 5, 5, 3)) * jnp.array([1., 4., .2]) + jnp.array(
      [2., -7., 30.])
  for vbs in (0, 4):  # the whole batch, and ghost groups of 4 (the mean of the group stats)
    bn = layers.BatchNorm(momentum=momentum, virtual_batch_size=vbs)
    _, upd = _bn_apply(bn, bn.init(jax.random.key(0), x, train=False), x)
    mean, var = layers.running_stats(upd['batch_stats'])
    groups = np.asarray(x).reshape(-1, vbs or 12, 5, 5, 3)
    want_mean = groups.mean(axis=(1, 2, 3)).mean(axis=0)
    want_var = groups.var(axis=(1, 2, 3), ddof=1).mean(axis=0)  # n / (n - 1), n = v * H * W
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5)
    np.testing.assert_allclose(var, want_var, rtol=1e-5)


def test_batchnorm_virtual_batches_equal_separate_batches():
  x = jax.random.normal(jax.random.key(2), (8, 3, 3, 4)) * 2 + 1
  ghost = layers.BatchNorm(momentum=0.8, virtual_batch_size=2)
  plain = layers.BatchNorm(momentum=0.8)
  variables = plain.init(jax.random.key(0), x, train=False)
  variables = {'params': {'scale': jnp.array([1., 2., 3., 4.]), 'bias': jnp.array([0., 1., 0., -1.])},
               'batch_stats': _stats([.5, 0., 0., 1.], [1., 2., 3., 1.], 1.5)}
  y, upd = _bn_apply(ghost, variables, x)
  outs, means, varis = [], [], []
  for g in range(4):
    yg, ug = _bn_apply(plain, variables, x[2 * g:2 * g + 2])
    outs.append(yg)
    means.append(ug['batch_stats']['mean_sum'])
    varis.append(ug['batch_stats']['var_sum'])
  np.testing.assert_allclose(y, jnp.concatenate(outs), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(upd['batch_stats']['mean_sum'], np.mean(means, axis=0), rtol=1e-6)
  np.testing.assert_allclose(upd['batch_stats']['var_sum'], np.mean(varis, axis=0), rtol=1e-6)
  np.testing.assert_allclose(upd['batch_stats']['count'], 0.8 * 1.5 + 1, rtol=1e-6)
  # ...and it differs from normalizing the whole batch of 8 at once.
  y_whole, _ = _bn_apply(plain, variables, x)
  assert not np.allclose(y, y_whole, atol=1e-3)


def test_batchnorm_virtual_batch_must_divide_batch():
  bn = layers.BatchNorm(virtual_batch_size=3)
  x = jnp.ones((8, 2, 2, 1))
  variables = bn.init(jax.random.key(0), x, train=True)  # init is allowed any batch
  with pytest.raises(ValueError, match='virtual_batch_size=3 must divide .* 8'):
    _bn_apply(bn, variables, x)
  bn.apply(variables, x, train=False)  # eval does not group


def test_batchnorm_compute_dtype():
  bn = layers.BatchNorm(dtype=jnp.bfloat16)
  x = jnp.ones((4, 2, 2, 3), jnp.bfloat16)
  variables = bn.init(jax.random.key(0), x, train=False)
  y, upd = _bn_apply(bn, variables, x)
  assert y.dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(upd))


def test_virtual_batch_size_reaches_every_bn_of_a_model():
  model = models.create_model('resnet8', num_classes=10, virtual_batch_size=3)
  x = jnp.ones((4, 32, 32, 3))
  variables = _abstract_variables(model, x.shape)
  with pytest.raises(ValueError, match='virtual_batch_size'):
    jax.eval_shape(functools.partial(model.apply, train=True, mutable=['batch_stats']),
                   variables, x)


# ------------------------------------------------------------------------------------------
# Architecture details
# ------------------------------------------------------------------------------------------


def test_caffe_resnet_zero_channel_shortcut():
  """After stage-2 block 1 (and stage-3 block 1) the upper half of the channels are exactly 0."""
  model = models.create_model('resnet8', num_classes=10)
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  variables = _init(model, x)
  _, state = _train_apply(model, variables, x, mutable=['batch_stats', 'intermediates'],
                          capture_intermediates=True)
  inter = state['intermediates']
  s2 = inter['stage2_block1']['__call__'][0]
  s3 = inter['stage3_block1']['__call__'][0]
  assert s2.shape == (2, 16, 16, 32) and s3.shape == (2, 8, 8, 64)
  np.testing.assert_array_equal(s2[..., 16:], 0.0)
  np.testing.assert_array_equal(s3[..., 32:], 0.0)
  assert float(jnp.abs(s2[..., :16]).sum()) > 0
  # The first block of a stage keeps the input width in both convs.
  k = variables['params']['stage2_block1']
  assert k['conv1']['kernel'].shape == (3, 3, 16, 16)
  assert k['conv2']['kernel'].shape == (3, 3, 16, 16)
  # Stage 3's first block sees the 32 channels (16 of them zero) that stage 2 produced.
  assert variables['params']['stage3_block1']['conv1']['kernel'].shape == (3, 3, 32, 32)


def test_caffe_avg_pool_clips_edge_windows():
  x = jnp.arange(25.0).reshape(1, 5, 5, 1)  # ceil((5-3)/2)+1 = 2 outputs, none clipped
  np.testing.assert_allclose(layers.caffe_avg_pool(x, 3, 2)[0, :, :, 0], [[6., 8.], [16., 18.]])
  y = layers.caffe_avg_pool(jnp.arange(4.0).reshape(1, 1, 4, 1).repeat(3, axis=1), 3, 2)
  # Rows 0..2 averaged; columns: windows [0,1,2] -> 1 and the clipped [2,3] -> 2.5.
  np.testing.assert_allclose(y[0, :, :, 0], [[1.0, 2.5]])


def test_dropout_only_in_train_mode_with_rng():
  model = models.create_model('resnet8', num_classes=10, dropout_rate=0.5)
  no_drop = models.create_model('resnet8', num_classes=10)
  x = jax.random.normal(jax.random.key(4), (4, 32, 32, 3))
  variables = _init(model, x)
  train = jax.jit(lambda rng: model.apply(variables, x, train=True, mutable=['batch_stats'],
                                          rngs={'dropout': rng}))
  a, _ = train(jax.random.key(1))
  b, _ = train(jax.random.key(2))
  assert not np.allclose(a, b)
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(functools.partial(model.apply, train=True, mutable=['batch_stats']),
                   variables, x)
  evaluate = lambda m: jax.jit(functools.partial(m.apply, train=False))(variables, x)
  np.testing.assert_array_equal(evaluate(model), evaluate(no_drop))
  c, _ = _train_apply(no_drop, variables, x, rngs={'dropout': jax.random.key(1)})
  d, _ = _train_apply(no_drop, variables, x)
  np.testing.assert_array_equal(c, d)


def test_caffe_initialisers():
  fan_in = 3 * 3 * 64
  w = layers.msra_init(jax.random.key(5), (3, 3, 64, 256))
  assert abs(float(w.std()) / np.sqrt(2 / fan_in) - 1) < 0.02
  assert float(jnp.abs(w).max()) > 3 * np.sqrt(2 / fan_in)  # untruncated normal
  v = layers.xavier_init(jax.random.key(6), (1000, 200))
  bound = np.sqrt(3 / 1000)
  assert float(jnp.abs(v).max()) <= bound
  assert abs(float(v.std()) / (bound / np.sqrt(3)) - 1) < 0.02
  params = _init(models.create_model('resnet8', num_classes=10), jnp.ones((1, 32, 32, 3)))['params']
  np.testing.assert_array_equal(params['conv_stem']['bias'], 0.0)
  np.testing.assert_array_equal(params['fc']['bias'], 0.0)
  assert float(jnp.abs(params['fc']['kernel']).max()) <= np.sqrt(3 / 64)


def test_densenet_widths():
  variables = _abstract_registered('densenet40')
  p = variables['params']
  assert p['conv_transition1']['kernel'].shape == (1, 1, 160, 160)
  assert p['conv_transition2']['kernel'].shape == (1, 1, 304, 304)
  assert p['fc']['kernel'].shape == (448, 10)
  assert 'bias' not in p['conv_block1_layer1']


@pytest.mark.parametrize('name,small', [
    ('resnet56', 'resnet8'), ('resnet110', 'resnet8'), ('resnet8', 'resnet8'),
    ('resnet56_a', 'resnet8_a'), ('wide_resnet32', 'wide_resnet8'),
    ('bottleneck_resnet56', 'bottleneck_resnet11'), ('resnext56', 'resnext11'),
    ('densenet40', 'densenet10'), ('lenet', 'lenet'), ('resnet50', 'resnet_imagenet_tiny'),
    ('inception_resnet_v2', 'inception_resnet_tiny'),
    ('resnet_imagenet_tiny', 'resnet_imagenet_tiny'), ('not_a_model', 'not_a_model'),
])
def test_smallest_is_the_smallest_registered_member_of_the_family(name, small):
  assert models.smallest(name) == small
  if name != 'not_a_model':
    assert small in models.MODELS  # what the smoke variants build is registered
