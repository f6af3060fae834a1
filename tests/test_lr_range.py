"""LR range test: reading rules on synthetic curves, the Python API's hands-off contract, and
`run` end to end through the real trainer pieces on fake data."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from superconv import configure
from superconv import lr_range
from superconv import optim
from superconv.lr_range import core

LRS = np.linspace(0.0, 3.0, 61)                             # evaluations every 0.05
PEAKED = 0.1 + 0.7 * np.exp(-((LRS - 1.0) / 0.6) ** 2)      # peak 0.8 at LR 1, back to 0.1
FLAT = 0.1 + 0.75 * (1 - np.exp(-LRS / 0.3))                # rises and stays (ResNet-56 style)


# ----------------------------------------------------------------------------------------------
# Reading the curves


def test_smooth_loss_closed_form():
  # beta 0.5: avg = 0.5, 1.75, 1.875 ; / (1 - 0.5^t) = 1, 2.3333, 2.142857
  np.testing.assert_allclose(lr_range.smooth_loss([1.0, 3.0, 2.0], 0.5),
                             [1.0, 7 / 3, 1.875 / 0.875])
  np.testing.assert_allclose(lr_range.smooth_loss([5.0] * 4, 0.98), [5.0] * 4)  # no start bias
  np.testing.assert_allclose(lr_range.smooth_loss([1.0, 2.0], 0.0), [1.0, 2.0])


def test_divergence_of_a_step_to_100():
  # Loss 1 for 100 updates, then 100. With beta 0.9 (bias correction ~1 by then) the smoothed
  # loss k updates after the jump is 1 + 99 (1 - 0.9^k): 10.9 at k = 1 (> 4 x 1), and > 20 first
  # at k = 3 (0.9^2 = 0.81 > 80/99 = 0.808 > 0.9^3).
  losses = [1.0] * 100 + [100.0] * 10
  smoothed = lr_range.smooth_loss(losses, 0.9)
  assert lr_range.divergence_step(smoothed, 4.0) == 100
  assert lr_range.divergence_step(smoothed, 20.0) == 102
  assert lr_range.divergence_step(smoothed, 0.0) is None        # 0: no ratio test
  assert lr_range.divergence_step(smoothed[:100], 4.0) is None
  assert lr_range.divergence_step(lr_range.smooth_loss([1.0, 0.9, np.nan, 0.5], 0.9),
                                  0.0) == 2                     # non-finite always stops


def test_clear_peak():
  s = lr_range.suggest(LRS, PEAKED)
  assert s['method'] == 'peak' and not s['flat'] and s['reliable']
  assert s['max_lr'] == pytest.approx(1.0)
  assert s['min_lr_clr'] == pytest.approx(0.25)       # / min_lr_div_clr = 4
  assert s['min_lr_1cycle'] == pytest.approx(0.1)     # / min_lr_div_1cycle = 10
  # The fall: tolerance = 0.2 * (smoothed max ~0.795 - raw min 0.1) ~ 0.139, and PEAKED drops
  # below 0.795 - 0.139 = 0.656 past LR 1.29.
  assert s['tolerance'] == pytest.approx(0.2 * (0.795 - PEAKED.min()), rel=1e-3)
  assert 1.1 < s['fall_lr'] < 1.5
  later = lr_range.suggest(LRS, PEAKED, rule='fall', min_lr_div_clr=3.0)
  assert later['max_lr'] == later['fall_lr'] and later['min_lr_clr'] == later['max_lr'] / 3


def test_flat_curve_with_an_outlier_dip():
  acc = FLAT + np.random.default_rng(0).normal(0.0, 0.02, LRS.shape)
  acc[40] -= 0.25   # one bad evaluation, as range3Iter20k's 60 % among 78 % (digest §6.2)
  s = lr_range.suggest(LRS, acc)
  assert s['flat'] and s['reliable'] and s['method'] == 'flat-largest'
  assert 'accuracy never fell' in s['explanation'] and 'super-convergence' in s['explanation']
  assert s['max_lr'] == 3.0 and s['fall_lr'] is None
  peak = lr_range.suggest(LRS, acc, flat_rule='peak')
  assert peak['flat'] and peak['max_lr'] == peak['peak_lr'] > 1.0
  # Without smoothing the single dip reads as a fall.
  assert not lr_range.suggest(LRS, acc, window=1)['flat']


@pytest.mark.parametrize('row', [
    [61.5, 73.3, 66.7, 67.1, 76.4, 78.1, 78.4],   # range3Iter5kFig2b
    [75.3, 80.7, 72.2, 70.9, 78.0, 60.2, 78.5],   # range3Iter20kFig2b
    [75.6, 80.0, 80.4, 80.1, 67.0, 79.7, 72.2],   # range3Iter100kFig2b
])
def test_the_papers_resnet56_sweeps_read_flat(row):
  # Test accuracy (%) of the authors' ResNet-56 range tests at LR 0.25 .. 3 (digest §6.2), after
  # the untrained net's 10 %: the paper reads these as flat, the super-convergence sign.
  s = lr_range.suggest([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], [0.1] + [a / 100 for a in row])
  assert s['flat'] and s['reliable'] and s['max_lr'] == 3.0


@pytest.mark.parametrize('seed', range(5))
def test_noisy_peak_with_a_spike(seed):
  acc = PEAKED + np.random.default_rng(seed).normal(0.0, 0.03, LRS.shape)
  acc[np.searchsorted(LRS, 2.2)] = 0.95   # one spurious high evaluation far past the peak
  assert LRS[np.argmax(acc)] == pytest.approx(2.2)   # the raw maximum is fooled ...
  s = lr_range.suggest(LRS, acc)                      # ... the median is not
  assert not s['flat'] and abs(s['max_lr'] - 1.0) <= 0.15


def test_divergence_cuts_a_flat_looking_curve():
  # The loss diverged at LR 2 and the last evaluation collapsed to chance: a median hides one
  # collapsed end point, so the stop itself must count as the fall.
  lrs, acc = LRS[:42], FLAT[:42].copy()
  acc[-1] = 0.1
  assert lr_range.suggest(lrs, acc)['flat']
  s = lr_range.suggest(lrs, acc, stop_lr=2.0)
  assert not s['flat'] and s['reliable'] and s['max_lr'] < 2.0
  assert 'diverged at LR 2' in s['explanation']


def test_a_sweep_that_barely_trained_the_net_gives_no_reading():
  # 0.10 -> 0.18 and still rising when the sweep ends (ResNet-20, 100 updates on a CIFAR-10
  # subset): it never fell, but only because the net was still learning.
  acc = 0.1 + 0.08 * LRS / LRS[-1]
  s = lr_range.suggest(LRS, acc)
  assert not s['reliable'] and not s['flat'] and 'learned too little' in s['explanation']
  assert 'needs > 0.1' in s['explanation']
  looser = lr_range.suggest(LRS, acc, min_rise=0.05)   # the threshold is the caller's
  assert looser['reliable'] and looser['flat'] and looser['max_lr'] == 3.0


def test_unreliable_when_nothing_was_learned():
  s = lr_range.suggest(LRS, np.full(LRS.shape, 0.1))
  assert not s['reliable'] and not s['flat'] and s['method'] == 'unreliable'
  s = lr_range.suggest([0.0, 3.0], [0.1, 0.1], stop_lr=1.0)
  assert not s['reliable']


def test_loss_based_reading():
  lrs = np.geomspace(1e-4, 10.0, 51)
  x = np.log10(lrs)
  # Falls fastest at 1e-2 (a tanh step centred there), bottoms near 1, explodes after.
  loss = 2.3 - np.tanh(x + 2.0) + np.where(x > 0, 50 * x ** 2, 0.0)
  r = lr_range.suggest_from_loss(lrs, loss)
  assert r['steepest_lr'] == pytest.approx(1e-2, rel=0.3)
  assert r['min_loss_lr'] == pytest.approx(1.0, rel=0.3)
  assert 1e-4 < r['valley_lr'] < 1.0
  # Only the points before the divergence count.
  assert lr_range.suggest_from_loss(lrs, loss, stop=20)['min_loss_lr'] == pytest.approx(lrs[19])
  assert lr_range.suggest_from_loss(lrs[:2], loss[:2])['steepest_lr'] is None


# ----------------------------------------------------------------------------------------------
# The Python API leaves the caller's state alone


class _TinyNet(nn.Module):
  """Conv + BatchNorm + dropout + dense: every kind of state the sweep must not touch."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.Dropout(0.1, deterministic=not train)(nn.relu(x))
    return nn.Dense(3)(x.mean((1, 2)))


def _problem(n=48, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n).astype(np.int32)
  images = rng.normal(0, 1, (n, 6, 6, 2)).astype(np.float32) + labels[:, None, None, None]
  return images, labels


def _snapshot(tree):
  return [np.array(x) for x in jax.tree.leaves(tree)]


def _assert_unchanged(tree, snapshot):
  leaves = jax.tree.leaves(tree)
  assert len(leaves) == len(snapshot)
  for leaf, before in zip(leaves, snapshot):
    assert not (isinstance(leaf, jax.Array) and leaf.is_deleted())  # not donated
    np.testing.assert_array_equal(np.asarray(leaf), before)


def _spy_on_the_update(monkeypatch):
  """The jitted update functions `find` builds (to count their compilations)."""
  made = []
  jit = jax.jit

  def spy(fn, *a, **kw):
    out = jit(fn, *a, **kw)
    if getattr(fn, '__name__', '') == 'update':
      made.append(out)
    return out
  monkeypatch.setattr(core.jax, 'jit', spy)
  return made


def test_range_test_leaves_caller_state_untouched(monkeypatch):
  made = _spy_on_the_update(monkeypatch)
  model = _TinyNet()
  images, labels = _problem()
  key = jax.random.PRNGKey(42)
  variables = model.init({'params': key, 'dropout': key}, jnp.asarray(images[:2]), train=False)
  assert variables['batch_stats']
  injected = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
  opt_state = injected.init(variables['params'])
  before = (_snapshot(variables), _snapshot(opt_state), np.array(key))
  common = dict(min_lr=0.0, max_lr=0.8, num_steps=6, batch_size=8, eval_every_steps=3,
                eval_batch_size=16, key=key)

  from_state = lr_range.range_test(model, injected, variables, (images, labels),
                                   (images[:24], labels[:24]), opt_state=opt_state, **common)
  from_factory = lr_range.range_test(model, lambda lr: optax.sgd(lr, momentum=0.9), variables,
                                     (images, labels), (images[:24], labels[:24]), **common)

  _assert_unchanged(variables, before[0])
  _assert_unchanged(opt_state, before[1])
  np.testing.assert_array_equal(np.asarray(key), before[2])
  # The sweep itself: per-update LR of the linear schedule, evaluations at 0, 3, 6.
  np.testing.assert_allclose(from_state.lrs, np.arange(6) * 0.8 / 6, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(from_state.eval_steps, [0, 3, 6])
  np.testing.assert_allclose(from_state.eval_lrs, [0.0, 0.4, 0.8], rtol=1e-6)
  assert np.all(np.isfinite(from_state.train_loss)) and from_state.diverged_at is None
  # Training happened: the loss moved once the LR was non-zero (update 0 has LR 0).
  assert from_state.train_loss[0] != from_state.train_loss[-1]
  # One dispatch per update, and the step compiled once for all six of them.
  assert [f._cache_size() for f in made] == [1, 1]
  # Both ways of passing SGD run the same sweep.
  np.testing.assert_allclose(from_factory.train_loss, from_state.train_loss, rtol=1e-5)
  np.testing.assert_allclose(from_factory.eval_accuracy, from_state.eval_accuracy)


def test_range_test_rejects_an_optimizer_with_its_own_schedule():
  model = _TinyNet()
  images, labels = _problem(n=16)
  variables = model.init({'params': jax.random.PRNGKey(0)}, jnp.asarray(images[:2]), train=False)
  scheduled = optax.inject_hyperparams(optax.sgd)(learning_rate=lambda step: 0.3, momentum=0.0)
  with pytest.raises(ValueError, match='numeric learning_rate'):
    lr_range.range_test(model, scheduled, variables, (images, labels), (images, labels),
                        min_lr=0.0, max_lr=1.0, num_steps=2, batch_size=8, eval_every_steps=2)
  with pytest.raises(ValueError, match='injected learning_rate'):
    lr_range.range_test(model, optax.sgd(0.1), variables, (images, labels), (images, labels),
                        min_lr=0.0, max_lr=1.0, num_steps=2, batch_size=8)


# ----------------------------------------------------------------------------------------------
# Config entry point, end to end


def _smoke_config(**lr_range_overrides):
  c = default.get_config('tiny')
  c.mode = 'lr_range'
  c.schedule = optim.schedule_config('lr_range')
  c.model.name = 'lenet'   # the smallest registered model: fast to compile on 2 CPU cores
  c.progress_bar = False
  c.data.scale = 1 / 255
  for k, v in lr_range_overrides.items():
    c.lr_range[k] = v
  return c


def test_run_writes_json_png_and_summary(tmp_path, capsys):
  config = _smoke_config(min_lr=0.0, max_lr=0.08, diverge_factor=0.0)  # 8 updates, eval every 4
  result = lr_range.run(config, str(tmp_path))
  assert 'suggested LR range:' in capsys.readouterr().out
  assert (tmp_path / 'lr_range.png').stat().st_size > 10_000
  rec = json.loads((tmp_path / 'lr_range.json').read_text())
  np.testing.assert_allclose(rec['lr'], np.arange(8) * 0.01, rtol=1e-6, atol=1e-8)
  assert len(rec['train_loss']) == len(rec['train_loss_smoothed']) == 8
  assert rec['train_loss_smoothed'][0] == pytest.approx(rec['train_loss'][0])
  assert rec['eval']['step'] == [0, 4, 8]
  np.testing.assert_allclose(rec['eval']['lr'], [0.0, 0.04, 0.08], rtol=1e-6)
  assert all(0.0 <= a <= 1.0 for a in rec['eval']['accuracy'])
  assert rec['diverged_at'] is None
  s = rec['suggestion']
  assert s['min_lr_clr'] == pytest.approx(s['max_lr'] / 4)
  assert s['min_lr_1cycle'] == pytest.approx(s['max_lr'] / 10)
  assert s['method'] and s['explanation'] and 'flat' in s
  assert 'steepest_lr' in rec['loss_suggestion']
  assert rec['provenance']['jax'] == jax.__version__
  assert rec['settings']['model'] == 'lenet' and result.suggestion == s


def test_run_stops_on_divergence(tmp_path):
  # LR 0 -> 1e4 over 8 updates: update 1 already has LR 1250.
  result = lr_range.run(_smoke_config(max_lr=1e4), str(tmp_path))
  rec = json.loads((tmp_path / 'lr_range.json').read_text())
  assert rec['diverged_at'] is not None and rec['diverged_at'] <= 4
  assert rec['diverged_lr'] == pytest.approx(1250.0 * rec['diverged_at'], rel=1e-5)
  assert len(rec['lr']) == 4 and rec['eval']['step'] == [0, 4]  # stopped at the first eval
  assert not result.suggestion['flat'] and not result.suggestion['reliable']


def test_range_config_turns_a_training_config_into_a_sweep():
  c = configure.range_form(default.get_config())   # the CLR 0.1-3 training config
  assert (c.mode, c.schedule.name, c.num_steps) == ('lr_range', 'lr_range', 5000)
  assert set(c.schedule) == {'name'}  # the sweep's arguments are config.lr_range
  configure.validate(c, num_devices=1)
  # A cyclical momentum that took the LR's step size keeps it in the sweep.
  caffe = default.get_config()
  caffe.schedule = optim.schedule_config('caffe_one_cycle', step_size=4000)
  caffe.momentum_schedule.name = 'cyclical'
  swept = configure.range_form(caffe)
  assert (swept.schedule.name, swept.momentum_schedule.step_size) == ('lr_range', 4000)
  assert caffe.momentum_schedule.step_size == 0   # the input is not modified
  bad = default.get_config()
  bad.lr_range.eval_every_steps = 0
  with pytest.raises(configure.ConfigError, match='lr_range.eval_every_steps'):
    configure.range_form(bad)


# ----------------------------------------------------------------------------------------------
# Feeding the suggestion into training


def _result_file(tmp_path, **suggestion):
  s = {'max_lr': 2.0, 'min_lr_clr': 0.5, 'min_lr_1cycle': 0.2, 'reliable': True,
       'method': 'flat-largest', **suggestion}
  path = tmp_path / 'lr_range.json'
  path.write_text(json.dumps({'suggestion': s}))
  return str(path)


def test_apply_suggestion(tmp_path):
  c = default.get_config()
  c.lr_range.accept_mismatch = True  # these files record no settings (see the test below)
  assert configure.apply_suggestion(c) is c                 # lr_range_result empty: unchanged
  c.lr_range_result = _result_file(tmp_path)
  clr = configure.apply_suggestion(c)
  assert (clr.schedule.max_lr, clr.schedule.base_lr) == (2.0, 0.5)
  assert (c.schedule.max_lr, c.schedule.base_lr) == (3.0, 0.1)   # the input is not modified
  c.schedule = optim.schedule_config('one_cycle')
  one = configure.apply_suggestion(c)
  assert one.schedule.max_lr == 2.0 and 'base_lr' not in one.schedule
  assert one.schedule.max_lr / one.schedule.div_factor == pytest.approx(0.2)  # starts at min
  c.schedule = optim.schedule_config('caffe_one_cycle')
  assert configure.apply_suggestion(c).schedule.base_lr == 0.2
  c.schedule = optim.schedule_config('multistep')
  with pytest.raises(configure.ConfigError, match='multistep'):
    configure.apply_suggestion(c)
  c.schedule = optim.schedule_config('triangular')
  c.lr_range_result = _result_file(tmp_path, reliable=False, explanation='never rose')
  with pytest.raises(configure.ConfigError, match='no reliable reading'):
    configure.apply_suggestion(c)
  c.lr_range_result = str(tmp_path / 'missing.json')
  with pytest.raises(configure.ConfigError, match='cannot read'):
    configure.apply_suggestion(c)


# ----------------------------------------------------------------------------------------------
# find: any training, any layout


def _token_lm(vocab=16, dim=8):
  """A bigram language model on token batches {'tokens': int32 [B, T]}: embed, project."""
  rng = np.random.default_rng(0)
  params = {'embed': rng.normal(0, 0.1, (vocab, dim)).astype(np.float32),
            'out': rng.normal(0, 0.1, (dim, vocab)).astype(np.float32)}

  def logits(params, tokens):
    return params['embed'][tokens[:, :-1]] @ params['out']

  def loss_fn(params, state, batch, key):
    del key
    z = logits(params, batch['tokens'])
    loss = optax.softmax_cross_entropy_with_integer_labels(z, batch['tokens'][:, 1:]).mean()
    return loss, ({'seen': state['seen'] + 1}, {})

  def eval_fn(params, state, batch):
    z = logits(params, batch['tokens'])
    return {'loss': optax.softmax_cross_entropy_with_integer_labels(
        z, batch['tokens'][:, 1:]).mean(),
            'accuracy': (z.argmax(-1) == batch['tokens'][:, 1:]).mean()}
  return params, loss_fn, eval_fn


def _token_batches(seed, n, batch=8, length=12, vocab=16):
  # A noisy rule (next = 3 * token + 1 mod vocab, else a random token, 1 in 4): learnable, and
  # not to zero loss, so too large an LR diverges.
  rng = np.random.default_rng(seed)
  for _ in range(n):
    t = np.zeros((batch, length), np.int32)
    t[:, 0] = rng.integers(0, vocab, batch)
    for i in range(1, length):
      t[:, i] = np.where(rng.random(batch) < 0.75, (3 * t[:, i - 1] + 1) % vocab,
                         rng.integers(0, vocab, batch))
    yield {'tokens': t}


def test_find_sweeps_dict_batches_on_four_devices_with_sharded_params(monkeypatch):
  made = _spy_on_the_update(monkeypatch)
  devices = np.asarray(jax.devices()[:4])
  assert devices.size == 4   # tests/conftest.py: 4 CPU devices
  mesh = jax.sharding.Mesh(devices, ('model',))
  spec = jax.sharding.PartitionSpec
  host, loss_fn, eval_fn = _token_lm()
  params = {'embed': jax.device_put(host['embed'], jax.NamedSharding(mesh, spec(None, 'model'))),
            'out': jax.device_put(host['out'], jax.NamedSharding(mesh, spec('model', None)))}
  state = {'seen': jnp.zeros((), jnp.int32)}
  batch_sharding = jax.NamedSharding(mesh, spec('model', None))
  batches = ({'tokens': jax.device_put(b['tokens'], batch_sharding)}   # sharded over devices
             for b in _token_batches(0, 40))
  held_out = list(_token_batches(1, 2))
  before = (_snapshot(params), _snapshot(state))
  r = lr_range.find(loss_fn, params, optax.sgd, batches, model_state=state, eval_fn=eval_fn,
                    eval_batches=held_out, min_lr=1e-3, max_lr=1000.0, num_steps=40,
                    eval_every_steps=2, momentum=(0.95, 0.85), run_steps=400,
                    identity={'model': 'bigram'})
  _assert_unchanged(params, before[0])   # bit-identical, not donated
  _assert_unchanged(state, before[1])
  assert params['embed'].sharding.spec == spec(None, 'model')
  assert [f._cache_size() for f in made] == [1]   # one compilation: shardings kept
  s = r.settings
  assert s['metric'] == 'loss' and s['maximize'] is False and s['reading'] == 'eval'
  assert s['identity']['model'] == 'bigram' and s['identity']['params'] == 2 * 16 * 8
  assert s['identity']['batch_size'] == 8 and s['identity']['input_shape'] == {'tokens': [12]}
  assert s['momentum_swept'] == [0.95, 0.85]
  assert s['identity']['optimizer']['momentum'] == pytest.approx(0.95)
  # The held-out loss fell, then the LR grew past what SGD tolerates: the sweep stopped.
  loss = r.eval_metrics['loss']
  assert loss.min() < 0.7 * loss[0] and r.eval_metrics['accuracy'].max() > 0.4
  assert r.reliable and 1e-3 < r.max_lr < 1000.0 and r.suggestion['method'] in ('peak', 'fall')
  assert r.diverged_at is not None and len(r.lrs) < 40
  assert r.max_lr < r.lrs[r.diverged_at]
  np.testing.assert_allclose(r.lrs, np.geomspace(1e-3, 1000.0, 41)[:len(r.lrs)], rtol=1e-4)
  # Cost: updates x batch + evaluations x 16 held-out sequences / 3, against 400 updates + one
  # evaluation.
  n, m = len(r.lrs), len(r.eval_steps)
  assert r.cost['fraction'] == pytest.approx((n * 8 + m * 16 / 3) / (400 * 8 + 16 / 3))


def test_find_repeats_a_seed_function_and_reads_the_training_loss_without_eval():
  params, loss_fn, _ = _token_lm()
  orders = []

  def batches(seed):
    orders.append(seed)
    return _token_batches(seed, 30)
  r = lr_range.find(loss_fn, params, optax.sgd, batches, model_state={'seen': np.int32(0)},
                    min_lr=1e-2, max_lr=100.0, num_steps=30, repeats=3)
  assert orders == [0, 1, 2] and r.spread['repeats'] == 3
  assert r.settings['reading'] == 'loss' and r.suggestion['method'] in ('valley', 'unreliable')
  assert len(r.eval_steps) == 0   # nothing evaluated
  # The three sweeps saw different data: different losses.
  assert len({tuple(x.train_loss[:5].round(6)) for x in r.runs}) == 3
  with pytest.raises(TypeError, match='one-pass iterator'):
    lr_range.find(loss_fn, params, optax.sgd, _token_batches(0, 30),
                  model_state={'seen': np.int32(0)}, num_steps=10, repeats=2)


def test_find_checks_its_arguments_before_any_compute(monkeypatch):
  params, loss_fn, eval_fn = _token_lm()
  monkeypatch.setattr(core, '_place', lambda *a: pytest.fail('computed before the check'))
  with pytest.raises(TypeError, match='num_iter'):
    lr_range.find(loss_fn, params, optax.sgd, [], num_iter=10)  # pylint: disable=unexpected-kw
  with pytest.raises(ValueError, match='eval_batches'):
    lr_range.find(loss_fn, params, optax.sgd, [], eval_fn=eval_fn)
  with pytest.raises(ValueError, match="rule must be 'peak' or 'fall'"):
    lr_range.find(loss_fn, params, optax.sgd, [], rule='late')
  with pytest.raises(ValueError, match='smoothing'):
    lr_range.find(loss_fn, params, optax.sgd, [], smoothing=1.5)
  with pytest.raises(TypeError, match='num_iter'):
    lr_range.range_test(_TinyNet(), optax.sgd, {}, _problem(), batch_size=8, num_iter=10)


class _Deterministic(nn.Module):
  """flax's examples' convention: `deterministic=`, no `train=`."""

  @nn.compact
  def __call__(self, x, deterministic: bool):
    x = nn.Dropout(0.2, deterministic=deterministic)(nn.relu(nn.Dense(8)(x.mean((1, 2)))))
    return nn.Dense(3)(x)


class _NoFlag(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x.mean((1, 2)))


@pytest.mark.parametrize('module', [_Deterministic(), _NoFlag()], ids=['deterministic', 'none'])
def test_a_linen_module_with_another_mode_flag_needs_no_wrapper(module):
  images, labels = _problem()
  variables = module.init(jax.random.PRNGKey(0), jnp.asarray(images[:2]),
                          **({'deterministic': True} if isinstance(module, _Deterministic)
                             else {}))
  r = lr_range.range_test(module, optax.sgd, variables, (images, labels), (images, labels),
                          min_lr=0.0, max_lr=2.0, num_steps=8, batch_size=8,
                          eval_every_steps=4)
  assert np.all(np.isfinite(r.train_loss[:4])) and r.train_loss[0] != r.train_loss[3]
  assert r.settings['identity']['model'] == type(module).__name__
  assert r.settings['identity']['num_classes'] == 3
  assert r.settings['identity']['input_shape'] == [6, 6, 2]


# ----------------------------------------------------------------------------------------------
# A result's identity, files, reliability and the run it feeds


def _made_result(reliable=True, **settings):
  lrs = np.linspace(0.0, 1.0, 8)
  s = lr_range.suggest(lrs[[0, 2, 4, 6, 7]], [0.1, 0.5, 0.7, 0.3, 0.1], window=1)
  if not reliable:
    s = lr_range.suggest(lrs[[0, 2, 4, 6, 7]], [0.1] * 5, window=1)
  return lr_range.RangeTestResult(
      lrs=lrs, train_loss=2 - lrs, train_loss_smoothed=2 - lrs,
      eval_steps=np.array([0, 2, 4, 6, 7]), eval_lrs=lrs[[0, 2, 4, 6, 7]],
      eval_accuracy=np.array([0.1, 0.5, 0.7, 0.3, 0.1]), eval_loss=np.ones(5),
      suggestion=s, loss_suggestion={}, settings=settings,
      eval_metrics={'accuracy': np.array([0.1, 0.5, 0.7, 0.3, 0.1]), 'loss': np.ones(5)})


def test_an_unreliable_reading_is_not_a_number(tmp_path):
  bad = _made_result(reliable=False)
  with pytest.raises(lr_range.UnreliableReading, match='learned too little'):
    _ = bad.max_lr
  with pytest.raises(lr_range.UnreliableReading):
    bad.schedules('one_cycle', 100)
  assert bad.suggestion['max_lr'] == 1.0   # the raw value, for inspection
  assert bad.summary().startswith('UNRELIABLE')
  assert 'UNRELIABLE' in bad.figure().axes[0].get_title()
  good = _made_result()
  assert good.max_lr == pytest.approx(4 / 7) and 'UNRELIABLE' not in good.figure().axes[
      0].get_title()


def test_save_load_round_trip_and_leaves_a_runs_files_alone(tmp_path):
  for name, text in (('metrics.jsonl', '{"step": 1}\n'), ('summary.json', '{"a": 1}'),
                     ('config.json', '{"b": 2}'), ('checkpoints/1/x', 'ckpt')):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  before = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
  r = _made_result(identity={'model': 'MLP', 'params': 10}, momentum_swept=None)
  path = r.save(str(tmp_path))
  after = {p for p in tmp_path.rglob('*') if p.is_file()}
  assert after - set(before) == {tmp_path / 'lr_range.json', tmp_path / 'lr_range.png'}
  assert all(p.read_bytes() == b for p, b in before.items())
  back = lr_range.load(path)
  assert lr_range.load(str(tmp_path)).suggestion == back.suggestion == r.suggestion
  for f in ('lrs', 'train_loss', 'train_loss_smoothed', 'eval_steps', 'eval_lrs',
            'eval_accuracy', 'eval_loss'):
    np.testing.assert_array_equal(getattr(back, f), getattr(r, f))
  np.testing.assert_array_equal(back.eval_metrics['accuracy'], r.eval_metrics['accuracy'])
  assert back.settings == r.settings and back.max_lr == r.max_lr
  (tmp_path / 'other.json').write_text('{"a": 1}')
  with pytest.raises(ValueError, match='not a saved range test'):
    lr_range.load(str(tmp_path / 'other.json'))


def test_the_effective_step_rule_from_python():
  # Read at max_lr 4/7 under momentum 0.9: the tested step is (4/7) / 0.1.
  r = _made_result(identity={'momentum': 0.9})
  e = (4 / 7) / 0.1
  # A 1cycle with momentum 0.95 -> 0.85: its largest lr/(1-m) is at the LR peak, (4/7) / 0.15,
  # below the tested one: 'cap' leaves the reading; 'match' raises it to the tested step.
  b = r.bounds('one_cycle', 100, momentum=(0.95, 0.85))
  assert b['scale'] == 1.0 and b['max_lr'] == pytest.approx(4 / 7)
  assert b['min_lr'] == pytest.approx(4 / 70)
  assert r.bounds('one_cycle', 100, momentum=(0.95, 0.85), rule='match')['scale'] == (
      pytest.approx(e / ((4 / 7) / 0.15)))
  # Held at 0.95 (the tested momentum unknown to the run): the step would double, so 'cap'
  # halves every bound.
  lr, m = r.schedules('clr', 100, momentum=(0.95, 0.95))
  assert float(lr(50)) == pytest.approx(4 / 7 * 0.5, rel=1e-5)        # the CLR peak
  assert float(lr(0)) == pytest.approx(4 / 7 / 4 * 0.5, rel=1e-5)     # max / min_lr_div_clr
  assert float(m(50)) == pytest.approx(0.95)
  lr, m = r.schedules('one_cycle', 100)   # momentum None: the tested 0.9, constant
  assert float(m(10)) == pytest.approx(0.9, rel=1e-6)
  assert max(float(lr(t)) for t in range(100)) == pytest.approx(4 / 7, rel=1e-5)
  # A momentum swept alongside: the value where the LR first reached the reading.
  swept = _made_result(momentum_swept=[0.95, 0.85], num_steps=7)
  assert swept.tested_momentum() == pytest.approx(0.95 - 0.1 * 4 / 7)


def test_a_python_result_of_another_model_is_refused_by_a_run(tmp_path):
  images, labels = _problem()
  model = _TinyNet()
  variables = model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(0)},
                         jnp.asarray(images[:2]), train=False)
  r = lr_range.range_test(model, lambda lr: optax.sgd(lr, momentum=0.9), variables,
                          (images, labels), (images, labels), min_lr=0.0, max_lr=1.0,
                          num_steps=4, batch_size=8, eval_every_steps=2, min_rise=0.0)
  path = r.save(str(tmp_path))
  c = _smoke_config()
  c.mode = 'train'
  c.schedule = optim.schedule_config('one_cycle')
  c.lr_range_result = path
  with pytest.raises(configure.ConfigError) as e:
    configure.apply_suggestion(c)
  message = str(e.value)
  assert "model: tested '_TinyNet', this run 'LeNet'" in message
  assert 'input_shape: tested [6, 6, 2]' in message and 'num_classes: tested 3' in message
  assert 'params: tested' in message and 'batch_size: tested 8' in message
  # A result that records nothing is refused too; accept_mismatch takes either on purpose.
  c.lr_range_result = _result_file(tmp_path)
  with pytest.raises(configure.ConfigError, match='records neither its config'):
    configure.apply_suggestion(c)
  c.lr_range.accept_mismatch = True
  assert configure.apply_suggestion(c).schedule.max_lr == 2.0


def test_the_identity_a_cli_sweep_records_matches_the_run_it_feeds(tmp_path):
  c = _smoke_config(min_lr=0.0, max_lr=0.08, num_steps=4, eval_every_steps=2)
  result = lr_range.run(configure.range_form(c), str(tmp_path))
  ident = result.settings['identity']
  run = c.copy_and_resolve_references()
  run.mode = 'train'
  mine = configure.run_identity(run)
  assert {k: ident[k] for k in mine if k != 'optimizer'} == {
      k: v for k, v in mine.items() if k != 'optimizer'}
  assert configure.identity_differences(ident, run) == []


def test_importing_the_range_test_and_schedules_pulls_in_no_tfds_orbax_or_ml_collections():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys, superconv.lr_range, superconv.schedules; '
          "print(sorted({m.split('.')[0] for m in sys.modules} & "
          "{'tensorflow_datasets', 'tensorflow', 'orbax', 'ml_collections', 'matplotlib'}))")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       timeout=120)
  assert out.stdout.strip() == '[]', out.stdout + out.stderr


def test_installing_superconv_adds_no_other_top_level_package():
  # What `pip install` ships: setuptools' package discovery as pyproject.toml configures it
  # (namespaces on, setuptools' default for [tool.setuptools.packages.find]).
  import os  # pylint: disable=g-import-not-at-top
  import setuptools  # pylint: disable=g-import-not-at-top
  import tomllib  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, 'pyproject.toml'), 'rb') as f:
    find = tomllib.load(f)['tool']['setuptools']['packages']['find']
  found = setuptools.find_namespace_packages(where=root, include=find['include'],
                                             exclude=find.get('exclude', ()))
  assert {'superconv', 'superconv.lr_range', 'superconv.models', 'superconv.data'} <= set(found)
  assert {p.split('.')[0] for p in found} == {'superconv'}   # no `configs`, `tests`, ...


def test_a_python_result_of_the_same_training_feeds_a_run_under_the_cap(tmp_path):
  from superconv import models  # pylint: disable=g-import-not-at-top
  c = _smoke_config()
  c.mode = 'train'
  c.schedule = optim.schedule_config('one_cycle')
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 64).astype(np.int32)
  images = rng.integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)
  model = models.create_model('lenet', num_classes=10)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  injected = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9)
  r = lr_range.range_test(model, injected, variables, (images, labels), (images, labels),
                          min_lr=0.0, max_lr=0.1, num_steps=4, batch_size=c.batch_size,
                          eval_every_steps=2, scale=1 / 255, min_rise=0.0)
  assert r.settings['identity']['momentum'] == pytest.approx(0.9)
  c.lr_range_result = r.save(str(tmp_path))
  if not r.reliable:  # a 4-update sweep on noise: make the file's reading usable
    rec = json.loads((tmp_path / 'lr_range.json').read_text())
    rec['suggestion'].update(reliable=True, max_lr=0.08, min_lr_clr=0.02, min_lr_1cycle=0.008)
    (tmp_path / 'lr_range.json').write_text(json.dumps(rec))
  max_lr = lr_range.load(str(tmp_path)).max_lr
  fed = configure.apply_suggestion(c)   # the same model, data shape, batch and momentum 0.9
  assert fed.schedule.max_lr == pytest.approx(max_lr)   # the tested step: unscaled
  c.momentum_schedule.name = 'constant'
  c.momentum_schedule.value = 0.95
  with pytest.raises(configure.ConfigError, match='momentum: tested 0.9, this run starts at 0.95'):
    configure.apply_suggestion(c)
  c.lr_range.accept_mismatch = True   # taken on purpose: held to the tested step lr / (1 - m)
  capped = configure.apply_suggestion(c)
  assert capped.schedule.max_lr < max_lr
  assert configure.max_effective_step(capped) == pytest.approx(max_lr / (1 - 0.9), rel=1e-4)
