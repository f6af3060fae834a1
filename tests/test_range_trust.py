"""A range test people can trust: held-out validation, repeats and their spread, the cost,
settings matched with the run it feeds, and the two presets."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from superconv import configure
from superconv import lr_range
from superconv import model_adapter
from superconv import optim
from superconv.data import pipeline
from superconv.data import sources


def _fake(**data) -> ml_collections.ConfigDict:
  c = default.get_config()
  c.data.source, c.data.fake_num_train, c.data.fake_num_test = 'fake', 200, 50
  for k, v in data.items():
    c.data[k] = v
  return c


def _keys(images) -> set:
  return {x.tobytes() for x in images}


def test_validation_is_held_out_of_training_balanced_and_seed_independent():
  c = _fake()
  full = pipeline.load(c.data)
  held = pipeline.load(c.data, eval_split='validation', eval_examples=40, eval_seed=3)
  assert len(held.test_labels) == 40 and len(held.train_labels) == 160
  assert np.bincount(held.test_labels, minlength=10).tolist() == [4] * 10
  assert not _keys(held.test_images) & _keys(held.train_images)          # disjoint
  assert _keys(held.test_images) | _keys(held.train_images) == _keys(full.train_images)
  c.seed = 7  # the run's seed does not move the split
  again = pipeline.load(c.data, eval_split='validation', eval_examples=40, eval_seed=3)
  np.testing.assert_array_equal(again.test_images, held.test_images)
  other = pipeline.load(c.data, eval_split='validation', eval_examples=40, eval_seed=4)
  assert _keys(other.test_images) != _keys(held.test_images)
  np.testing.assert_array_equal(held.mean, full.mean)  # the full training set's mean, as before


def test_with_a_training_subset_the_validation_comes_from_the_rest():
  c = _fake(train_subset=100)
  subset = pipeline.load(c.data)
  held = pipeline.load(c.data, eval_split='validation', eval_examples=50)
  np.testing.assert_array_equal(held.train_images, subset.train_images)  # the run's own subset
  assert not _keys(held.test_images) & _keys(subset.train_images)
  with pytest.raises(sources.DataError, match='lr_range.eval_examples=200'):
    pipeline.load(c.data, eval_split='validation', eval_examples=200)


def test_a_test_subset_is_a_fixed_balanced_draw():
  c = _fake()
  a = pipeline.load(c.data, eval_split='test', eval_examples=20)
  b = pipeline.load(c.data, eval_split='test', eval_examples=20)
  assert len(a.test_labels) == 20 and np.bincount(a.test_labels, minlength=10).max() == 2
  np.testing.assert_array_equal(a.test_images, b.test_images)


def test_range_form_checks_the_new_fields_and_sweeps_momentum_at_its_start():
  c = default.get_config()
  c.momentum_schedule.name = 'one_cycle'  # 0.95 -> 0.85
  swept = configure.range_form(c)
  assert (swept.momentum_schedule.name, swept.momentum_schedule.value) == ('constant', 0.95)
  assert swept.lr_range.run_steps == 10_000  # the training run it configures
  for field, value, match in (('eval_split', 'train', 'eval_split'),
                              ('eval_examples', 0, 'eval_examples'),
                              ('repeats', 0, 'repeats'), ('min_rise', 1.0, 'min_rise'),
                              ('reading', 'lr', 'reading'), ('momentum', 'max', 'momentum')):
    bad = default.get_config()
    bad.lr_range[field] = value
    with pytest.raises(configure.ConfigError, match=f'lr_range.{match}'):
      configure.range_form(bad)


def _cyclical_sweep_of_a_1cycle(**lr_range) -> ml_collections.ConfigDict:
  """A Caffe 1cycle with momentum 0.95 -> 0.8, as a sweep 0 -> 0.3 over 40 updates."""
  c = default.get_config()
  c.schedule = optim.schedule_config('caffe_one_cycle')
  c.schedule.step_size = 400
  c.momentum_schedule.name = 'cyclical'
  c.momentum_schedule.max_momentum, c.momentum_schedule.min_momentum = 0.95, 0.8
  c.lr_range.update({'min_lr': 0.0, 'max_lr': 0.3, 'num_steps': 40, 'momentum': 'cyclical',
                     **lr_range})
  return c


def test_a_cyclical_sweep_lowers_the_momentum_as_the_lr_rises():
  swept = configure.range_form(_cyclical_sweep_of_a_1cycle())
  assert swept.momentum_schedule.name == 'cyclical' and swept.momentum_schedule.step_size == 40
  lr_fn, m_fn = optim.build_schedules(swept)
  # LR k/40 * 0.3 with momentum 0.95 - 0.15 k/40: the pairs of the cycle's first half.
  for k in (0, 10, 20, 40):
    assert float(lr_fn(k)) == pytest.approx(0.3 * k / 40, abs=1e-7)
    assert float(m_fn(k)) == pytest.approx(0.95 - 0.15 * k / 40, abs=1e-6)
  tested = swept.to_dict()
  assert configure.tested_momentum(tested, 0.075) == pytest.approx(0.9125, abs=1e-6)  # k = 10
  assert configure.tested_momentum(tested, 0.15) == pytest.approx(0.875, abs=1e-6)  # k = 20
  # Past the last update's LR (0.3 x 39/40): that update's momentum.
  assert configure.tested_momentum(tested, 0.3) == pytest.approx(0.95 - 0.15 * 39 / 40, abs=1e-6)
  held = configure.range_form(_cyclical_sweep_of_a_1cycle(momentum='start')).to_dict()
  assert configure.tested_momentum(held, 0.075) == 0.95


def test_a_cyclical_sweeps_reading_feeds_the_cycle_as_it_is_under_cap(tmp_path):
  run = _cyclical_sweep_of_a_1cycle()
  tested = configure.range_form(run).to_dict()
  path = tmp_path / 'lr_range.json'
  path.write_text(json.dumps({
      'suggestion': {'max_lr': 0.075, 'min_lr_clr': 0.01875, 'min_lr_1cycle': 0.0075,
                     'reliable': True}, 'settings': {'config': tested}}))
  run.lr_range_result = str(path)
  # Tested at 0.075: momentum 0.9125, step 0.075 / 0.0875. The cycle's largest step is at its
  # peak, 0.075 / (1 - 0.8), below it: 'cap' leaves the reading as it is ...
  fed = configure.apply_suggestion(run)
  assert (fed.schedule.max_lr, fed.schedule.base_lr) == pytest.approx((0.075, 0.0075))
  # ... and 'match' raises the peak until its step is the tested one.
  run.lr_range.effective_step = 'match'
  fed = configure.apply_suggestion(run)
  assert fed.schedule.max_lr == pytest.approx(0.075 * 0.2 / 0.0875, rel=1e-5)


@pytest.fixture(scope='module')
def swept(run_cli, tmp_path_factory):
  """A tiny ResNet-56-config range test read on validation, 2 repeats, through the CLI; its
  suggestion read on the training loss (`lr_range.reading='loss'`, the fastai preset's)."""
  workdir = str(tmp_path_factory.mktemp('range'))
  done = run_cli('--config=configs/resnet56.py:tiny', '--config.mode=lr_range',
                 '--config.lr_range.repeats=2', '--config.lr_range.max_lr=0.1',
                 '--config.lr_range.reading=loss', '--config.progress_bar=False',
                 workdir=workdir, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, done.stdout


def test_cli_range_test_names_its_split_spread_and_cost(swept):
  workdir, stdout = swept
  record = json.load(open(os.path.join(workdir, 'lr_range.json')))
  assert record['settings']['eval_split'] == 'validation'
  assert record['settings']['eval_examples'] == 40
  assert record['spread']['repeats'] == 2 and len(record['spread']['max_lr']) == 2
  assert len(record['repeats']) == 2
  # The two sweeps saw different data orders: their loss curves differ.
  assert record['repeats'][0]['train_loss'] != record['repeats'][1]['train_loss']
  # 2 sweeps of 8 updates at batch 16 plus 3 x 40 validation images each, against 8 updates
  # and 3 evaluations of the 100 test images.
  assert record['cost']['sweep_images'] == pytest.approx(2 * (8 * 16 + 3 * 40 / 3))
  assert record['cost']['run_images'] == pytest.approx(8 * 16 + 3 * 100 / 3)
  assert 'Median of 2 sweeps' in stdout and 'validation split' in stdout
  for sweep in record['repeats']:   # each sweep's suggestion is its loss valley
    assert sweep['suggestion']['method'] in ('valley', 'unreliable')
    if sweep['suggestion']['reliable']:
      assert sweep['suggestion']['max_lr'] == sweep['loss_suggestion']['valley_lr']
  for name in ('metrics.jsonl', 'summary.json', 'lr_range.png'):  # a training run's files too
    assert os.path.exists(os.path.join(workdir, name))


def _reliable_copy(workdir: str, tmp_path) -> str:
  """The CLI's result with its suggestion marked reliable (8 updates give no real reading)."""
  record = json.load(open(os.path.join(workdir, 'lr_range.json')))
  record['suggestion'].update(reliable=True, max_lr=0.08, min_lr_clr=0.02, min_lr_1cycle=0.008)
  path = tmp_path / 'lr_range.json'
  path.write_text(json.dumps(record))
  return str(path)


def test_a_run_with_other_momentum_is_stopped_before_compiling(run_cli, swept, tmp_path):
  path = _reliable_copy(swept[0], tmp_path)
  workdir = tmp_path / 'run'
  done = run_cli('--config=configs/resnet56.py:tiny', f'--config.lr_range_result={path}',
                 '--config.momentum_schedule.value=0.95', '--config.progress_bar=False',
                 workdir=workdir, timeout=600)
  assert done.returncode == 2, done.stderr[-2000:]
  assert 'momentum: tested 0.9, this run starts at 0.95' in done.stderr
  assert 'accept_mismatch' in done.stderr
  assert not os.path.exists(workdir / 'checkpoints')  # nothing was compiled or trained


def test_matching_settings_take_the_suggestion(swept, tmp_path):
  c = default.get_config('tiny')
  c.lr_range_result = _reliable_copy(swept[0], tmp_path)
  run = configure.resolve(c, num_devices=1)
  assert (run.schedule.max_lr, run.schedule.base_lr) == (0.08, 0.02)  # CLR bounds, unscaled


def test_accepted_mismatch_holds_the_effective_step_to_what_was_tested(swept, tmp_path):
  c = default.get_config('tiny')
  c.lr_range_result = _reliable_copy(swept[0], tmp_path)
  c.momentum_schedule.value = 0.95
  c.lr_range.accept_mismatch = True
  run = configure.apply_suggestion(c)
  # Tested: 0.08 / (1 - 0.9); this run at 0.95 would take 0.08 / 0.05, twice that: halved.
  assert run.schedule.max_lr == pytest.approx(0.04)
  assert run.schedule.base_lr == pytest.approx(0.01)
  assert configure.max_effective_step(run) == pytest.approx(0.08 / 0.1, rel=1e-5)


def test_a_cyclical_momentum_run_is_capped_or_matched_to_the_tested_step(swept, tmp_path):
  c = default.get_config('tiny')
  c.lr_range_result = _reliable_copy(swept[0], tmp_path)     # read at constant momentum 0.9
  c.schedule = optim.schedule_config('caffe_one_cycle')
  c.schedule.step_size = c.num_steps // 2
  c.momentum_schedule.name = 'cyclical'
  c.momentum_schedule.max_momentum, c.momentum_schedule.min_momentum = 0.9, 0.8
  # The default, 'cap': the run's steps are all below the test's 0.08 / (1 - 0.9): unscaled.
  assert configure.apply_suggestion(c).schedule.max_lr == pytest.approx(0.08)
  c.lr_range.effective_step = 'match'
  run = configure.apply_suggestion(c)
  # The test's step 0.08 / (1 - 0.9) is taken at the peak, where the momentum is 0.8.
  assert run.schedule.max_lr == pytest.approx(0.08 * 0.2 / 0.1, rel=1e-5)
  assert run.schedule.base_lr == pytest.approx(0.008 * 2, rel=1e-5)
  assert configure.max_effective_step(run) == pytest.approx(0.08 / 0.1, rel=1e-5)
  c.lr_range.effective_step = 'double'
  with pytest.raises(configure.ConfigError, match='effective_step'):
    configure.apply_suggestion(c)


def test_other_settings_are_named():
  tested = default.get_config().to_dict()
  run = default.get_config()
  run.batch_size, run.optimizer.nesterov = 500, True
  diffs = configure.setting_differences(tested, run)
  assert diffs == ['optimizer.nesterov: tested False, this run True',
                   'batch_size: tested 1000, this run 500']


def _problem(n=64, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, n).astype(np.int32)
  x = (rng.normal(size=(n, 1, 1, 2)) + 2.0 * y[:, None, None, None]).astype(np.float32)
  return x, y


def _linear():
  return model_adapter.PlainModel(lambda v, x, train: x.reshape(len(x), -1) @ v['params']['w'],
                                  {'params': {'w': jnp.zeros((2, 2))}})


def test_fastai_preset_sweeps_exponentially_and_reads_the_valley():
  x, y = _problem()
  result = lr_range.range_test(_linear(), optax.sgd, None, (x, y), batch_size=16,
                               preset='fastai')
  assert result.settings['mode'] == 'exp' and len(result.lrs) == 100
  assert result.lrs[0] == pytest.approx(1e-7) and result.lrs[-1] < 10.0
  assert result.suggestion['method'] in ('valley', 'unreliable')
  if result.suggestion['reliable']:
    assert result.suggestion['max_lr'] == result.loss_suggestion['valley_lr']


def test_smith_preset_needs_its_range_and_held_out_data():
  x, y = _problem()
  with pytest.raises(ValueError, match='needs min_lr, max_lr and num_steps'):
    lr_range.range_test(_linear(), optax.sgd, None, (x, y), (x, y), batch_size=16)
  with pytest.raises(ValueError, match='pass eval_data'):
    lr_range.range_test(_linear(), optax.sgd, None, (x, y), batch_size=16, min_lr=0.0,
                        max_lr=1.0, num_steps=10)


def test_api_repeats_report_the_median_and_spread():
  x, y = _problem()
  result = lr_range.range_test(_linear(), optax.sgd, None, (x, y), (x, y), batch_size=16,
                               min_lr=0.0, max_lr=2.0, num_steps=20, eval_every_steps=2,
                               repeats=3)
  spread = result.spread
  assert spread['repeats'] == 3 and len(result.runs) == 3
  reliable = sorted(r.suggestion['max_lr'] for r in result.runs if r.suggestion['reliable'])
  if reliable:
    assert result.max_lr == reliable[(len(reliable) - 1) // 2]
    assert (spread['max_lr_min'], spread['max_lr_max']) == (reliable[0], reliable[-1])
  assert spread['unreliable'] == 3 - len(reliable)


def test_the_report_pairs_the_suggestion_with_the_grid(tmp_path, capsys):
  from research.range_trust import report as range_trust  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'results'
  args = range_trust.PROTOCOLS['lenet_fashion_mnist']['args']
  names = range_trust.result_names('lenet_fashion_mnist')
  assert names['accuracy'] == 'lenet4_lr_range.json'  # the copies committed results read
  assert names['loss'] == 'lenet4_loss_lr_range.json'

  def seed(name, sets, summary, extra=None, run_args=args):
    d = root / 'range_trust' / name / 'seed0'
    d.mkdir(parents=True)
    (d / 'run.json').write_text(json.dumps({'args': run_args, 'sets': sets}))
    (d / 'summary.json').write_text(json.dumps({**summary, 'host_cpu': 'test CPU'}))
    for file, obj in (extra or {}).items():
      (d / file).write_text(json.dumps(obj))

  sweep = {'suggestion': {'max_lr': 0.08, 'min_lr_1cycle': 0.008, 'method': 'peak',
                          'reliable': True},
           'spread': {'max_lr': [0.06, 0.08, 0.1], 'max_lr_min': 0.06, 'max_lr_max': 0.1,
                      'unreliable': 0, 'flat': 0, 'repeats': 3},
           'cost': {'fraction': 0.2}, 'wall_seconds': 1.0,
           'settings': {'eval_split': 'validation', 'eval_examples': 2000, 'num_steps': 40,
                        'min_lr': 0.0, 'max_lr': 0.3, 'mode': 'linear',
                        'config': {'momentum_schedule': {'name': 'constant', 'value': 0.95}}}}
  fed = 'lr_range_result=x/' + names['accuracy']
  seed('range', ['mode=lr_range'], {}, {'lr_range.json': sweep})
  # The loss-valley sweep is read from the copy the fed runs read, beside the runs.
  loss_sweep = {**sweep, 'suggestion': {**sweep['suggestion'], 'max_lr': 0.02,
                                        'method': 'valley'},
                'settings': {**sweep['settings'], 'mode': 'exp', 'num_steps': 100,
                             'config': {**sweep['settings']['config'],
                                        'lr_range': {'reading': 'loss'}}}}
  (root / 'range_trust' / names['loss']).write_text(json.dumps(loss_sweep))
  seed('loss', ['lr_range_result=x/' + names['loss']],
       {'final_eval_accuracy': 0.87},
       {'config.json': {'schedule': {'max_lr': 0.08}, 'lr_range': {'effective_step': 'match'}}})
  seed('suggested', [fed], {'final_eval_accuracy': 0.885},
       {'config.json': {'schedule': {'max_lr': 0.32}}})       # the peak is read as it ran
  seed('cap', [fed, 'lr_range.effective_step=cap'], {'final_eval_accuracy': 0.88},
       {'config.json': {'schedule': {'max_lr': 0.08}}})
  seed('old', ['lr_range_result=x/other.json'], {'final_eval_accuracy': 0.5})  # not this one
  seed('other', [fed], {'final_eval_accuracy': 0.2}, run_args='policy=inv')    # nor this
  seed('g1', ['schedule.max_lr=0.05', 'schedule.base_lr=0.005'], {'final_eval_accuracy': 0.89})
  seed('g2', ['schedule.max_lr=0.3', 'schedule.base_lr=0.03'], {'diverged': True})
  r = range_trust.report(str(root))['protocols']['lenet_fashion_mnist']
  assert r['suggested']['values'] == [0.885] and r['suggested']['peak_lr'] == 0.32
  assert r['suggested_cap']['values'] == [0.88] and r['suggested_cap']['peak_lr'] == 0.08
  assert r['grid']['0.05']['mean'] == 0.89 and r['grid']['0.3']['diverged'] == 1
  assert r['grid_best'] == {'peak': 0.05, 'mean': 0.89}
  assert r['suggested']['gap_points'] == pytest.approx(0.5)
  assert r['suggested_cap']['gap_points'] == pytest.approx(1.0)
  assert r['sweep']['momentum'] == 0.95 and r['sweep']['reading'] == 'accuracy'
  assert r['sweep_loss']['reading'] == 'loss' and r['sweep_loss']['max_lr'] == 0.02
  assert r['suggested_loss']['values'] == [0.87]
  assert r['suggested_loss']['gap_points'] == pytest.approx(2.0)
  # The 12-epoch protocol shares the study folder: its runs (another config argument) and its own
  # sweep copy stay out of the 4-epoch report and make up its own.
  args12 = range_trust.PROTOCOLS['lenet_fashion_mnist_12']['args']
  names12 = range_trust.result_names('lenet_fashion_mnist_12')
  assert set(names12.values()).isdisjoint(names.values())
  result12 = names12['accuracy']
  (root / 'range_trust' / result12).write_text(
      json.dumps({**sweep, 'cost': {'fraction': 0.064}}))
  seed('cap12', ['lr_range_result=x/' + result12], {'final_eval_accuracy': 0.905},
       {'config.json': {'schedule': {'max_lr': 0.075}, 'lr_range': {'effective_step': 'cap'}}},
       run_args=args12)
  seed('g12', ['schedule.max_lr=0.12', 'schedule.base_lr=0.012'], {'final_eval_accuracy': 0.908},
       run_args=args12)
  both = range_trust.report(str(root))['protocols']
  assert both['lenet_fashion_mnist'] == r
  r12 = both['lenet_fashion_mnist_12']
  assert r12['suggested_cap']['values'] == [0.905] and r12['suggested'] is None
  assert r12['grid_best'] == {'peak': 0.12, 'mean': 0.908}
  assert r12['suggested_cap']['gap_points'] == pytest.approx(0.3)
  assert r12['sweep']['cost_fraction'] == 0.064 and r12['sweep_loss'] is None
  # A cyclical-momentum sweep's copy and the run fed it: the sweep's momentum is reported as it
  # fell, and its fed run is an arm of its own.
  cyclical = {**sweep, 'settings': {**sweep['settings'], 'config': {'momentum_schedule': {
      'name': 'cyclical', 'max_momentum': 0.95, 'min_momentum': 0.8, 'step_size': 40}}}}
  (root / 'range_trust' / names12['cyclical']).write_text(json.dumps(cyclical))
  seed('cyc12', ['lr_range_result=x/' + names12['cyclical']], {'final_eval_accuracy': 0.907},
       {'config.json': {'schedule': {'max_lr': 0.12}}}, run_args=args12)
  r12 = range_trust.report(str(root))['protocols']['lenet_fashion_mnist_12']
  assert r12['sweep_cyclical']['momentum'] == [0.95, 0.8] and r12['sweep']['momentum'] == 0.95
  assert r12['suggested_cyclical_cap']['values'] == [0.907]
  assert r12['suggested_cyclical_cap']['gap_points'] == pytest.approx(0.1)
  assert r12['suggested_cap']['values'] == [0.905]
  loss, cyc = ['--set', 'lr_range.reading=loss'], ['--set', 'lr_range.momentum=cyclical']
  for argv in (['lenet_fashion_mnist_12'], ['lenet_fashion_mnist', *loss],
               ['lenet_fashion_mnist_12', *cyc]):
    range_trust.main(['--result-name', *argv])
  assert capsys.readouterr().out.split() == [
      os.path.join('range_trust', f)
      for f in (result12, names['loss'], names12['cyclical'])]
  text = range_trust.markdown(range_trust.report(str(root)))
  assert 'at momentum 0.95 → 0.8 (falling as the LR rises)' in text
  assert 'cyclical-momentum sweep, cap: **0.10 points**' in text
  assert 'match: **0.50 points**' in text and 'cap: **1.00 points**' in text
  assert 'valley, match: **2.00 points**' in text and 'the valley of its training loss' in text
  assert '20.0 %' in text and '| **0.32** (fed the accuracy reading, `effective_step=match`' in text
  range_trust.plot(range_trust.report(str(root)), str(tmp_path / 'plot.png'))
  assert (tmp_path / 'plot.png').stat().st_size > 0


def test_find_sweep_takes_the_sweep_with_exactly_these_range_settings(tmp_path):
  from research.range_trust import report as range_trust  # pylint: disable=g-import-not-at-top
  args = range_trust.PROTOCOLS['lenet_fashion_mnist']['args']
  for name, sets in (('a_cyclical', ['lr_range.momentum=cyclical']), ('b_held', []),
                     ('c_unfinished', ['lr_range.num_steps=9'])):
    d = tmp_path / 'range_trust' / name / 'seed0'
    d.mkdir(parents=True)
    sets = ['mode=lr_range', 'lr_range.max_lr=0.3', *sets]
    (d / 'run.json').write_text(json.dumps({'args': args, 'sets': sets}))
    if name != 'c_unfinished':
      (d / 'summary.json').write_text('{}')
  find = lambda *sets: range_trust.find_sweep(str(tmp_path), 'lenet_fashion_mnist', list(sets))
  # The cyclical sweep has every --set of the held one, and sorts first: it is not taken.
  assert find('lr_range.max_lr=0.3') == str(tmp_path / 'range_trust' / 'b_held' / 'seed0'
                                              / 'lr_range.json')
  assert find('lr_range.max_lr=0.3', 'lr_range.momentum=cyclical').endswith(
      os.path.join('a_cyclical', 'seed0', 'lr_range.json'))
  assert find('lr_range.max_lr=0.3', 'lr_range.num_steps=9') is None  # not finished
