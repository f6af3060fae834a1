"""experiments.budget.study: a toy equal-budget study of tiny real runs, its layout and statistics."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.budget import arms
from experiments.budget import cifar
from experiments.budget import lenet
from experiments.budget import study
from superconv import configure
from superconv import models
from superconv import optim
from superconv import programs

TOY = {'toy': study.Protocol(
    'experiments/budget/lenet.py', 0.07, 40,  # 0.07 epochs at batch 512: 8 updates
    {study.REFERENCE: study.Arm('one_cycle', sweep_max_lr=0.05, sweep_steps=16,
                                sweep_eval_every=2),
     'linear': study.Arm('linear', grid=(0.01, 0.05)),
     'schedule_free': study.Arm('schedule_free', grid=(0.1, 1e6)),  # 1e6 diverges
        # reads schedule_free's grid runs and, like it, picks 0.1 (below the diverged 1e6): so its
     # final runs are schedule_free's, not new ones
     'sf_stable': study.Arm('schedule_free', grid=(0.1, 1e6), grid_of='schedule_free',
                            rule='stable')},
    (0, 1), 'A toy study.', (0.2, 0.99),
    sets=('data.source=fake', 'data.fake_num_train=200',
          'data.fake_num_test=100', 'batch_size=20', 'eval_every_steps=4',
          'log_every_steps=4', 'lr_range.min_rise=0.0', 'lr_range.diverge_factor=0.0',
          'data.check_counts=False'))}


@pytest.fixture(scope='module')
def toy_results(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('results'))
  study.run_protocol('toy', root=root, protocols=TOY)
  return root


@pytest.mark.integration  # a whole toy study: about a minute of compiles
def test_toy_study_layout_and_manifest(toy_results):
  toy = os.path.join(toy_results, 'toy')
  manifest = json.load(open(os.path.join(toy, 'manifest.json')))
  assert manifest['question'] == 'A toy study.'
  assert manifest['command'] == 'python -m experiments.budget.study run toy'
  # Tuning runs: one seed per grid point (validation split), the sweep; finals: both seeds.
  assert manifest['arms']['linear.p0.01']['seeds'] == [0]
  assert 'validation=40' in manifest['arms']['linear.p0.05']['args']
  assert manifest['arms']['linear']['seeds'] == [0, 1]
  assert 'validation' not in manifest['arms']['linear']['args']
  assert 'mode=lr_range' in manifest['arms']['1cycle_range.sweep']['set']
  ref = manifest['arms'][study.REFERENCE]
  assert any(s.startswith('lr_range_result=') for s in ref['set'])
  for arm, spec in manifest['arms'].items():
    for seed in spec['seeds']:
      d = os.path.join(toy, arm, f'seed{seed}')
      assert os.path.exists(os.path.join(d, 'summary.json')), d
      assert os.path.exists(os.path.join(d, 'run.json')), d


@pytest.mark.integration  # a whole toy study: about a minute of compiles
def test_tuning_reads_validation_and_finals_read_test(toy_results):
  toy = os.path.join(toy_results, 'toy')
  tuned = [json.loads(l) for l in open(os.path.join(toy, 'linear.p0.01', 'seed0',
                                                     'metrics.jsonl'))]
  final = [json.loads(l) for l in open(os.path.join(toy, 'linear', 'seed0', 'metrics.jsonl'))]
  assert {r['eval_examples'] for r in tuned if 'eval_examples' in r} == {40}
  assert {r['eval_examples'] for r in final if 'eval_examples' in r} == {100}
  # The best validation peak is the one the final seeds ran.
  acc = {p: json.load(open(os.path.join(toy, f'linear.p{p:g}', 'seed0', 'summary.json')))
         ['final_eval_accuracy'] for p in (0.01, 0.05)}
  best = study.best_peak(acc)
  cfg = json.load(open(os.path.join(toy, 'linear', 'seed1', 'config.json')))
  assert cfg['schedule']['max_lr'] == best and cfg['data']['validation_examples'] == 0


@pytest.mark.integration  # a whole toy study: about a minute of compiles
def test_report_counts_tuning_and_tests_against_the_range_arm(toy_results, tmp_path):
  doc = tmp_path / 'baselines.md'
  doc.write_text('# x\n<!-- begin budget_toy -->\n<!-- end budget_toy -->\n')
  out = study.report(root=toy_results, doc=str(doc), protocols=TOY)['toy']
  sf, lin, ref = (out['arms'][a] for a in ('schedule_free', 'linear', study.REFERENCE))
  assert sf['tuning']['1e+06'] is None  # diverged, and its budget still counted
  assert sf['tuning_updates'] == 2 * 8 and lin['tuning_updates'] == 2 * 8
  assert ref['tuning_updates'] == 16  # the sweep's updates
  # An arm on another arm's grid runs nothing of its own to tune, and counts that grid's cost.
  stable = out['arms']['sf_stable']
  assert stable['tuning'] == sf['tuning'] and stable['tuning_updates'] == sf['tuning_updates']
  assert not any(d.startswith('sf_stable.') for d in os.listdir(os.path.join(toy_results, 'toy')))
  assert stable['peak_lr'] == 0.1 and stable['seeds'] == [0, 1]
  assert not os.path.exists(os.path.join(toy_results, 'toy', 'sf_stable'))
  assert stable['runs_of'] == 'schedule_free' and stable['accuracies'] == sf['accuracies']
  assert stable['total_updates'] == sf['total_updates'] and lin['runs_of'] == 'linear'
  assert lin['total_updates'] == 16 + 2 * 8 and lin['seeds'] == [0, 1]
  assert lin['vs_reference']['p'] == study.welch(lin['accuracies'], ref['accuracies'])['p']
  assert lin['to_target']['0.99']['median_updates'] is None or lin['mean'] >= 0.99
  text = doc.read_text()
  assert '| linear |' in text and 'reference' in text and 'curves.png' in text
  assert "- sf_stable: schedule_free's grid, rule 'stable'" in text
  assert "the peak schedule_free picked, so its final runs are schedule_free's" in text
  assert os.path.exists(os.path.join(toy_results, 'toy', 'curves.png'))
  assert json.load(open(os.path.join(toy_results, 'toy', 'study.json')))['protocol'] == 'toy'
  # The manifest is rebuilt from the finished runs and names exactly the seed folders.
  manifest = json.load(open(os.path.join(toy_results, 'toy', 'manifest.json')))
  for arm, spec in manifest['arms'].items():
    assert sorted(os.listdir(os.path.join(toy_results, 'toy', arm))) == [
        f'seed{s}' for s in spec['seeds']]
  assert manifest['arms']['linear']['seeds'] == [0, 1]
  # Rerunning skips every finished seed (nothing is retrained: the summaries stay).
  before = os.path.getmtime(os.path.join(toy_results, 'toy', 'linear', 'seed0', 'summary.json'))
  study.run_protocol('toy', root=toy_results, protocols=TOY)
  assert os.path.getmtime(os.path.join(toy_results, 'toy', 'linear', 'seed0',
                                       'summary.json')) == before


def test_an_arm_on_another_grid_shares_its_runs_only_when_it_picks_the_same_peak(tmp_path):
  arm = study.Arm('linear', grid=(0.01, 0.02, 0.04), grid_of='linear', rule='stable')
  edge = {'0.01': 0.8, '0.02': None, '0.04': 0.9}  # 'best' picks 0.04, 'stable' 0.01
  assert study._runs_of('lin_stable', arm, edge, True, str(tmp_path)) == 'lin_stable'
  calm = {'0.01': 0.8, '0.02': 0.85, '0.04': None}  # both pick 0.02
  assert study._runs_of('lin_stable', arm, calm, True, str(tmp_path)) == 'linear'
  assert study._runs_of('lin_stable', arm, calm, False, str(tmp_path)) == 'lin_stable'
  os.makedirs(tmp_path / 'lin_stable')  # runs of its own (run before runs were shared) stay its own
  assert study._runs_of('lin_stable', arm, calm, True, str(tmp_path)) == 'lin_stable'


def test_report_takes_no_protocol_or_known_ones(capsys):
  assert study._parser().parse_args(['report']).protocols == []  # every protocol with results
  assert study._parser().parse_args(['report', 'lenet_3ep']).protocols == ['lenet_3ep']
  assert study.main(['report', 'lenet_3ep', 'nope']) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("superconv: unknown protocol(s) ['nope']; valid: ") and '\n' not in err


def test_welch_matches_scipy_and_the_verdicts():
  st = pytest.importorskip('scipy.stats')
  a, b = [0.881, 0.884, 0.879, 0.886, 0.882], [0.872, 0.875, 0.879]
  ref = st.ttest_ind(a, b, equal_var=False)
  r = study.welch(a, b)
  np.testing.assert_allclose([r['t'], r['p'], r['df']], [ref.statistic, ref.pvalue, ref.df],
                             rtol=1e-4)
  assert study.verdict(a, b) == 'wins' and study.verdict(b, a) == 'loses'
  assert study.verdict(a, [x + 1e-4 for x in a]) == 'ties'
  assert study.welch([1.0], [2.0, 3.0])['p'] is None


@pytest.mark.parametrize('variant', lenet.VARIANTS)
def test_every_arm_config_resolves_and_keeps_the_budget(variant):
  c = configure.resolve(programs.load_config('experiments/budget/lenet.py', variant))
  epochs = 12 if 'epochs=12' in variant else 3
  assert c.num_steps == epochs * 60_000 // 512 and c.batch_size == 512
  lr_fn, _ = optim.build_schedules(c)
  assert float(lr_fn(c.num_steps)) < 1e-3 * 0.05 or 'schedule_free' in variant
  assert (c.optimizer.name == 'schedule_free_sgd') == ('schedule_free' in variant)


@pytest.mark.parametrize('variant', cifar.VARIANTS)
def test_cifar_arm_configs_keep_the_budget(variant):
  c = configure.resolve(programs.load_config('experiments/budget/cifar.py', variant))
  assert (c.num_steps, c.batch_size, c.data.train_subset) == (312, 128, 10_000)
  assert (c.model.name, c.model.virtual_batch_size) == ('resnet8', 0)
  tuning = 'validation' in variant
  assert c.data.validation_examples == (2000 if tuning else 0)
  assert c.eval_every_steps == (0 if tuning else 52)  # 6 test evaluations: 52, ..., 312
  assert (c.optimizer.name == 'schedule_free_sgd') == ('schedule_free' in variant)
  assert c.optimizer.eval_bn_batches == 20


def test_cifar_model_is_the_stated_size():
  model = models.create_model('resnet8', num_classes=10)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                jnp.zeros((1, 32, 32, 3)), train=False))
  assert models.param_count(variables['params']) == 29_162
  assert '29,162 parameters' in cifar.__doc__ and '29,162 parameters' in study._CIFAR_QUESTION


def test_arm_schedules_and_an_unknown_name():
  c = configure.resolve(programs.load_config('experiments/budget/lenet.py', 'schedule=wsd'))
  assert c.schedule.name == 'wsd' and c.schedule.warmup_steps == round(0.05 * 351)
  with pytest.raises(ValueError, match="unknown arm schedule 'step'; valid: one_cycle"):
    arms.set_arm(c, 'step', 0.1)


def test_a_protocol_that_reads_local_data_needs_it(tmp_path, capsys):
  assert study.main(['run', 'cifar_4ep']) == 2
  err = capsys.readouterr().err.strip()
  assert err == ('superconv: cifar_4ep reads the CIFAR-10 archive (cifar10-jpeg.tar.gz): '
                 'name it with --data PATH')
  assert study.main(['run', 'cifar_4ep', '--data', str(tmp_path / 'none.tar.gz')]) == 2
  assert 'no such file or folder' in capsys.readouterr().err
  with pytest.raises(ValueError, match='name it with --data PATH'):
    study.run_protocol('cifar_4ep', root=str(tmp_path))
  assert not os.listdir(tmp_path)  # nothing written before the refusal
  assert study._command('cifar_4ep', study.PROTOCOLS['cifar_4ep']).endswith('--data PATH')
  assert study._command('lenet_3ep', study.PROTOCOLS['lenet_3ep']).endswith('lenet_3ep')


def test_a_finished_seed_of_another_setting_is_refused(tmp_path):
  """After a grid changes, the tuning may pick another peak than an earlier final seed ran:
  that seed is not silently reused."""
  seed_dir = tmp_path / 'toy' / 'linear' / 'seed0'
  seed_dir.mkdir(parents=True)
  (seed_dir / 'run.json').write_text(json.dumps(
      {'args': 'schedule=linear,epochs=0.07,peak=0.01', 'sets': list(TOY['toy'].sets)}))
  (seed_dir / 'summary.json').write_text('{"final_eval_accuracy": 0.5}')
  same = study._run(TOY['toy'], 'toy', 'linear', 'schedule=linear,epochs=0.07,peak=0.01', 0, [],
                    str(tmp_path))
  assert same['final_eval_accuracy'] == 0.5  # the same setting: skipped, its summary read
  with pytest.raises(ValueError, match="holds a run of 'schedule=linear,epochs=0.07,peak=0.01'"):
    study._run(TOY['toy'], 'toy', 'linear', 'schedule=linear,epochs=0.07,peak=0.05', 0, [],
               str(tmp_path))
