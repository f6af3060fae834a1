"""experiments/: results collection, tables, speed-up ratios, plots and the seed runner.

Results folders are synthetic (written here in tmp_path, with resolved configs from the real
config files), so every number the table prints is known in advance.
"""

import json
import os

import numpy as np
import pytest

from experiments import collect
from experiments import make_tables
from experiments import plots
from experiments import run as run_lib
from superconv import step as step_lib

from conftest import ROOT

CONFIGS = os.path.join(ROOT, 'configs')


def _write_run(root, stem, args, seed, evals, *, lrs=None, wall=3600.0, finished=True,
               sets=(), arm=''):
  """One results/<stem>/<arm>/seed<N>/ folder (run.json, metrics.jsonl, summary.json) and its
  arm in the study's manifest, as `experiments.run` writes them."""
  config = run_lib.build_config(os.path.join(CONFIGS, f'{stem}.py'), args, seed, sets)
  workdir = run_lib.run_dir(str(root), f'{stem}.py', args, seed, sets, arm=arm)
  os.makedirs(workdir)
  collect.record_arm(str(root), stem, os.path.basename(os.path.dirname(workdir)),
                     config=f'configs/{stem}.py', args=args, sets=sets, seed=seed)
  info = {'config_file': f'configs/{stem}.py', 'args': args, 'seed': seed, 'sets': list(sets),
          'config': config.to_dict(),
          'hardware': {'devices': '1 x TFRT_CPU_0', 'platform': 'cpu', 'host_cpu': 'Test CPU'}}
  with open(os.path.join(workdir, 'run.json'), 'w') as f:
    json.dump(info, f)
  lrs = lrs or {}
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    for step in sorted(set(dict(evals)) | set(lrs)):
      row = {'step': step}
      if step in lrs:
        row['lr'] = lrs[step]
      if step in dict(evals):
        row['eval_accuracy'] = dict(evals)[step]
      f.write(json.dumps(row) + '\n')
  if finished:
    accs = [a for _, a in evals]
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump({'final_eval_accuracy': accs[-1], 'best_eval_accuracy': max(accs),
                 'wall_seconds': wall, 'devices': '1 x TFRT_CPU_0', 'platform': 'cpu',
                 'host_cpu': 'Test CPU'}, f)
  return workdir


@pytest.fixture
def results(tmp_path):
  """PC-LR baseline (2 seeds, final 0.89 / 0.91 -> target 0.90 at 80,000) and CLR (3 seeds)
  whose seed-mean first reaches 0.90 at step 8,000 (no single seed decides it)."""
  root = tmp_path / 'results'
  for seed, final in ((0, 0.89), (1, 0.91)):
    _write_run(root, 'resnet56_baseline', '', seed,
               [(40_000, 0.7), (80_000, final)], lrs={40_000: 0.35, 80_000: 0.0035},
               wall=7200.0)
  clr = {0: [0.5, 0.80, 0.95, 0.93], 1: [0.5, 0.86, 0.86, 0.92], 2: [0.5, 0.90, 0.89, 0.91]}
  for seed, accs in clr.items():  # means: 0.5, 0.853, 0.9000, 0.92
    _write_run(root, 'resnet56', 'policy=clr', seed, list(zip((2000, 5000, 8000, 10_000), accs)),
               lrs={2000: 1.26, 5000: 3.0, 8000: 1.26, 10_000: 0.1}, wall=1800.0)
  return root


def test_collect_groups_seeds_and_mean_curve(results):
  groups = collect.load_groups(str(results))
  assert [g.name for g in groups.values()] == ['resnet56/policy-clr', 'resnet56_baseline/default']
  clr = collect.find_group(groups, 'resnet56')  # the default args resolve to policy=clr
  assert clr is collect.find_group(groups, 'resnet56:policy=clr')
  steps, mean, std = clr.mean_curve()
  np.testing.assert_array_equal(steps, [2000, 5000, 8000, 10_000])
  np.testing.assert_allclose(mean, [0.5, 2.56 / 3, 0.9, 0.92])
  np.testing.assert_allclose(std[-1], 0.01)  # 0.93, 0.92, 0.91
  assert collect.steps_to_reach(clr, 0.9) == 8000
  assert collect.steps_to_reach(clr, 0.93) is None


def test_speedup_ratio_known_answer(results):
  groups = collect.load_groups(str(results))
  (s,) = make_tables.speedups(groups, [('resnet56_baseline', 'resnet56:policy=clr')])
  assert s['target'] == pytest.approx(0.90)
  assert (s['baseline_steps'], s['fast_steps']) == (80_000, 8000)
  assert s['ratio'] == pytest.approx(10.0)
  line = make_tables.speedup_lines([s])
  assert 'reached at 8,000 iterations (160.0 epochs), 10.0x fewer iterations' in line
  # And the other way round: the fast run's own final accuracy, never reached by the baseline.
  assert s['fast_final'] == pytest.approx(0.92) and s['baseline_reaches_fast_final'] is None
  assert 'its own final 92.00 % came at 10,000 iterations (200.0 epochs)' in line
  assert 'which the baseline never reached' in line
  # A target above every mean: never reached, no ratio.
  never = collect.speedup(groups[('resnet56', 'policy-clr')],
                          groups[('resnet56_baseline', 'default')])
  assert never['fast_steps'] is None and never['ratio'] is None
  assert 'never reached' in make_tables.speedup_lines([never])


def test_table_rows_carry_paper_log_and_ours(results):
  text = make_tables.table(collect.load_groups(str(results)))
  rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[1:-1]]
          for line in text.splitlines()[2:]}
  clr = rows['`resnet56/policy-clr`']
  assert clr == ['`resnet56/policy-clr`', '`resnet56:policy=clr`', '1708.07120 Fig. 1a CLR',
                 'CLR 0.1–3, SS 5000',
                 '10,000', '92.4', '92.44 (best 92.49)', '92.00 ± 1.00 (n=3)', 'CPU: Test CPU',
                 '30.0 min']
  base = rows['`resnet56_baseline/default`']
  assert base[3:8] == ['0.35 ×0.1 at 50000, 70000', '80,000', '91.2', '90.32 (best 90.39)',
                       '90.00 ± 1.41 (n=2)']
  assert base[9] == '2.0 h'


def test_unfinished_and_unmatched_groups(tmp_path):
  root = tmp_path / 'r'
  _write_run(root, 'resnet20', 'policy=clr', 0, [(5000, 0.8)], finished=False)
  # An experiment-changing --set leaves the paper row: no reference numbers.
  _write_run(root, 'resnet20', 'policy=clr', 0, [(100, 0.3)],
             sets=('optimizer.weight_decay=0.001',))
  text = make_tables.table(collect.load_groups(str(root)))
  assert 'running (0/1 done)' in text
  other = [l for l in text.splitlines() if 'weight_decay' in l][0]
  assert '| — | ' in other and '30.00 ± 0.00 (n=1)' in other


def test_lr_range_row_and_plot(tmp_path):
  root = tmp_path / 'r'
  steps = list(range(0, 5001, 500))
  accs = [0.1, 0.6, 0.7, 0.8, 0.75, 0.82, 0.7, 0.78, 0.76, 0.8, 0.78]
  _write_run(root, 'resnet56_lr_range', 'iters=5000', 0, list(zip(steps, accs)),
             lrs={s: 3.0 * s / 5000 for s in steps})
  groups = collect.load_groups(str(root))
  text = make_tables.table(groups)
  assert '78.44 at LR 3 (peak 81.56)' in text and '78.00 at top LR, peak 82.00 (n=1)' in text
  assert 'range 0–3 (linear)' in text
  written = plots.plot_all(str(root))
  assert os.path.join(str(root), 'fig2b.png') in written
  for path in written:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_plots_write_pngs_next_to_results(results):
  written = plots.plot_all(str(results))
  expected = {os.path.join(str(results), 'resnet56', 'policy-clr', 'curves.png'),
              os.path.join(str(results), 'resnet56_baseline', 'default', 'curves.png'),
              os.path.join(str(results), 'fig1a.png')}
  assert set(written) == expected
  for path in written:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.path.getsize(path) > 5000
  out = str(results / 'cmp.png')
  assert plots.main(['--results', str(results), '--groups', 'resnet56_baseline', 'resnet56',
                     '--out', out]) == 0
  assert os.path.getsize(out) > 5000


def test_docs_block_replaced(results, tmp_path):
  page = tmp_path / 'results.md'
  page.write_text('# Results\n\nintro\n<!-- begin results -->\nold table\n'
                  '<!-- end results -->\n\n## After\n')
  assert make_tables.main(['--results', str(results), '--write', str(page)]) == 0
  text = page.read_text()
  assert text.startswith('# Results\n\nintro\n<!-- begin results -->\n| study/arm | config |')
  assert text.endswith('<!-- end results -->\n\n## After\n')
  assert 'old table' not in text and '10.0x fewer iterations' in text
  (tmp_path / 'plain.md').write_text('no markers here')
  with pytest.raises(ValueError, match='begin results'):
    make_tables.main(['--results', str(results), '--write', str(tmp_path / 'plain.md')])


def test_every_reference_pair_and_figure_names_a_real_config_row():
  for stem, args in make_tables.REFERENCES:
    assert collect.resolve(stem, collect.canonical_args(args)) is not None, (stem, args)
  specs = [s for pair in make_tables.PAIRS for s in pair]
  specs += [s for _, group_specs in plots.FIGURES.values() for s in group_specs]
  for spec in specs:
    if '/' in spec:  # 'study/arm', named exactly: an arm of a committed study manifest
      study, arm = spec.split('/')
      manifest = collect.read_manifest(os.path.join(RESULTS, study)) or {}
      assert arm in manifest.get('arms', {}), spec
      continue
    stem, _, args = spec.partition(':')
    assert collect.resolve(stem, collect.canonical_args(args)) is not None, spec


def test_canonical_args_and_slug():
  assert collect.canonical_args('value=1e-5,sweep=wd,seed=2') == 'sweep=wd,value=1e-05'
  assert collect.slug('policy=clr,samples=10000') == 'policy-clr_samples-10000'
  assert collect.slug('', ['progress_bar=False']) == 'default'
  assert collect.slug('', ['num_steps=100']) == 'default__num_steps-100'


def test_build_config_seed_data_and_sets():
  path = os.path.join(CONFIGS, 'resnet56_subset.py')
  c = run_lib.build_config(path, 'policy=clr,samples=10000', 3,
                           ['num_steps=200', 'schedule.step_size=100'], data='/data/cifar')
  assert (c.seed, c.data.source, c.data.path) == (3, 'files', '/data/cifar')
  assert (c.num_steps, c.schedule.step_size) == (200, 100)
  c = run_lib.build_config(path, 'policy=pclr,samples=10000', 3,
                           ['num_steps=200', 'schedule.boundaries=(10, 20)'])
  assert (c.num_steps, tuple(c.schedule.boundaries)) == (200, (10, 20))
  with pytest.raises(ValueError, match='no such config field'):
    run_lib.build_config(path, '', 0, ['schedule.not_a_field=1'])
  assert run_lib.run_dir('/r', 'configs/resnet56_subset.py', 'samples=10000,policy=clr', 2) == (
      '/r/resnet56_subset/policy-clr_samples-10000/seed2')


def test_run_end_to_end_writes_provenance_keeps_the_model_and_skips(tmp_path, capsys):
  """A real smoke run (LeNet, 8 updates on generated data) through experiments.run."""
  root = str(tmp_path / 'results')
  argv = ['--config', os.path.join(CONFIGS, 'lenet_mnist.py'), '--args', 'policy=inv,tiny',
          '--seeds', '0', '--results', root, '--set', 'progress_bar=False']
  assert run_lib.main(argv) == 0
  workdir = os.path.join(root, 'lenet_mnist', 'policy-inv_tiny', 'seed0')
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'config.json', 'metrics.jsonl',
                                         'run.json', 'summary.json', 'tensorboard']
  # The trained model is kept: its final checkpoint only (tiny saves at updates 4 and 8).
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['8']
  dropped = os.path.join(root, 'lenet_mnist', 'policy-inv_tiny', 'seed1')
  assert run_lib.main([*argv[:5], '1', *argv[6:], '--drop-checkpoints']) == 0
  assert 'checkpoints' not in os.listdir(dropped)
  with open(os.path.join(workdir, 'run.json')) as f:
    info = json.load(f)
  assert info['seed'] == 0 and info['args'] == 'policy=inv,tiny'
  assert info['config']['schedule']['name'] == 'inv'
  assert info['config']['num_steps'] == 8 and info['config']['progress_bar'] is False
  assert {'jax', 'flax', 'optax'} <= set(info['versions'])
  assert 'devices' in info['hardware'] and info['git_commit']
  assert info['command'].startswith('python -m experiments.run --config')
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['steps'] == 8
  mtime = os.path.getmtime(os.path.join(workdir, 'summary.json'))
  assert run_lib.main(argv) == 0  # a finished seed is skipped, not rerun
  assert 'skipped' in capsys.readouterr().out
  assert os.path.getmtime(os.path.join(workdir, 'summary.json')) == mtime


def test_a_diverged_seed_is_recorded_not_retried(tmp_path, monkeypatch):
  from superconv import train  # pylint: disable=g-import-not-at-top
  calls = []

  def diverge(config, workdir):
    calls.append(workdir)
    os.makedirs(os.path.join(workdir, 'checkpoints', '4'))
    raise step_lib.TrainingDiverged('The training loss became non-finite at update 6.')

  monkeypatch.setattr(train, 'train_and_evaluate', diverge)
  root = str(tmp_path / 'results')
  argv = ['--config', os.path.join(CONFIGS, 'resnet56_regularization.py'), '--args',
          'sweep=wd,value=1e-3,tiny', '--seeds', '0', '--results', root]
  assert run_lib.main(argv) == 0 and run_lib.main(argv) == 0
  assert len(calls) == 1  # the second call found summary.json
  with open(os.path.join(calls[0], 'summary.json')) as f:
    summary = json.load(f)
  assert summary['diverged'] and 'update 6' in summary['error']
  assert not os.path.exists(os.path.join(calls[0], 'checkpoints'))


def test_run_lr_range_smoke_feeds_tables_and_plots(tmp_path):
  """A real range-test smoke run (LeNet, 8 updates): the sweep lands in the trainer's format."""
  root = str(tmp_path / 'results')
  assert run_lib.main(['--config', os.path.join(CONFIGS, 'lenet_fashion_mnist.py'), '--args',
                       'policy=lr_range,tiny', '--seeds', '0', '--results', root,
                       '--set', 'progress_bar=False']) == 0
  (group,) = collect.load_groups(root).values()
  (r,) = group.runs
  steps, lrs = r.curve('lr')
  np.testing.assert_array_equal(steps, [0, 4, 8])
  np.testing.assert_allclose(lrs, [0.0, 0.1, 0.2], rtol=1e-6)  # linear 0 -> 0.2 over 8
  assert r.summary['steps'] == 8 and 0.0 <= r.summary['final_eval_accuracy'] <= 1.0
  assert os.path.exists(os.path.join(r.path, 'lr_range.json'))
  assert 'at top LR' in make_tables.table(collect.load_groups(root))


def test_a_run_recorded_before_a_config_field_existed_keeps_its_paper_row(tmp_path):
  # Results committed before configs/default.py gained a field (here the streaming fields) must
  # still match their experiment: the missing field is taken at its default. A recorded value
  # that differs from the experiment's still leaves the row.
  root = tmp_path / 'r'
  old = _write_run(root, 'resnet56', 'policy=clr', 0, [(10_000, 0.9)])
  info_path = os.path.join(old, 'run.json')
  info = json.load(open(info_path))
  for field in ('image_size', 'num_threads', 'prefetch'):
    del info['config']['data'][field]
  json.dump(info, open(info_path, 'w'))
  _write_run(root, 'resnet56', 'policy=clr', 0, [(10_000, 0.8)],
             sets=('optimizer.weight_decay=0.001',))
  rows = [l for l in make_tables.table(collect.load_groups(str(root))).splitlines()
          if 'resnet56' in l]
  matched = [l for l in rows if '90.00' in l][0]
  assert '1708.07120 Fig. 1a CLR' in matched and '| 92.4 |' in matched
  other = [l for l in rows if 'weight_decay' in l][0]
  assert '1708.07120' not in other


def test_superconvergence_report_pairs_ratio_and_twin_spread(tmp_path):
  """research.superconvergence_cpu.report finds its groups by what they ran, states the numbers."""
  from research.superconvergence_cpu import report as superconvergence  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'results'
  # LeNet at batch 512: 1cycle (1,406 updates, 3 seeds) reaches inv's final 0.90 at 1,000.
  for seed, accs in {0: (0.85, 0.90, 0.91), 1: (0.86, 0.91, 0.92), 2: (0.84, 0.89, 0.90)}.items():
    _write_run(root, 'lenet_fashion_mnist', 'policy=1cycle', seed,
               list(zip((500, 1000, 1406), accs)), lrs={500: 0.1, 1000: 0.04, 1406: 1e-5})
  for seed in (0, 1):
    _write_run(root, 'lenet_fashion_mnist', 'policy=inv,batch=512,epochs=24', seed,
               [(1400, 0.87), (2100, 0.895), (2812, 0.90)], lrs={1400: 0.008, 2812: 0.007})
  # ResNet-20, 2,500 images: CLR 150 updates (0.30 / 0.32), PC-LR 600 (0.34), and the twin.
  clr_sets = ('data.train_subset=2500', 'batch_size=64', 'model.virtual_batch_size=0',
              'num_steps=150', 'schedule.step_size=75', 'schedule.max_lr=1.0')
  for seed, acc in ((0, 0.30), (1, 0.32)):
    _write_run(root, 'resnet20', 'policy=clr', seed, [(50, 0.2), (150, acc)], sets=clr_sets,
               lrs={50: 0.7, 150: 0.1}, arm='clr_2500')
  _write_run(root, 'resnet20', 'policy=pclr', 0, [(150, 0.15), (600, 0.34)],
             sets=('data.train_subset=2500', 'batch_size=64', 'model.virtual_batch_size=0',
                   'num_steps=600', 'schedule.boundaries=(375, 525)'), lrs={150: 0.35, 600: 3e-3},
             arm='pclr_2500')
  for seed, acc in ((0, 0.29), (1, 0.33), (2, 0.31)):
    twin = root / 'twin' / 'resnet20_subset2500_clr_150' / f'seed{seed}'
    twin.mkdir(parents=True)
    collect.record_arm(str(root), 'twin', 'resnet20_subset2500_clr_150', seed=seed,
                       config='benchmarks/torch_twin.py', args='', sets=())
    (twin / 'run.json').write_text(json.dumps({'args': '', 'seed': seed}))
    (twin / 'metrics.jsonl').write_text(json.dumps({'step': 150, 'eval_accuracy': acc}) + '\n')
    (twin / 'summary.json').write_text(json.dumps({'final_eval_accuracy': acc}))
  report = superconvergence.report(str(root))
  inv = report['lenet']['inv']
  assert (inv['fast_reaches_baseline_final_at'], inv['baseline_steps']) == (1000, 2812)
  assert inv['ratio'] == pytest.approx(2.812)
  assert inv['fast_final']['n'] == 3 and inv['baseline_final']['n'] == 2
  assert inv['baseline_at_fast_steps']['mean'] == pytest.approx(0.87)  # inv at 1,400 <= 1,406
  cell = report['resnet20']['2500']
  assert cell['gain'] == pytest.approx(0.31 - 0.34)
  assert cell['pclr']['fast_reaches_baseline_final_at'] is None
  assert cell['pclr']['baseline_at_fast_steps']['mean'] == pytest.approx(0.15)
  twin = report['twin']
  assert twin['superconv_mean_inside_twin_spread'] and twin['torch']['n'] == 3
  text = superconvergence.markdown(report)
  assert '2.8x fewer' in text and 'inside' in text
  assert set(report['figures']) == {'lenet', 'resnet20_2500', 'twin'}
  for path in report['figures'].values():
    assert os.path.exists(os.path.join(superconvergence.REPO, path))


def test_a_group_whose_seeds_all_diverged_says_so():
  runs = [collect.Run('', 'x', 'g', '', s, {}, [], {'diverged': True}, []) for s in (0, 1)]
  assert make_tables.ours(collect.Group('x', 'g', runs)) == 'diverged (2 of 2)'
  unfinished = [collect.Run('', 'x', 'g', '', 0, {}, [], None, [])]
  assert make_tables.ours(collect.Group('x', 'g', unfinished)) == 'running (0/1 done)'


RESULTS = os.path.join(ROOT, 'experiments', 'results')
RUN_FILES = ('metrics.jsonl', 'run.json', 'summary.json')


def test_every_results_folder_is_an_arm_of_a_study_manifest(tmp_path):
  """The committed results: studies with a manifest, each folder an arm's seed, nothing lost."""
  results = collect.committed_results(str(tmp_path)) or RESULTS
  studies = sorted(d for d in os.listdir(results) if os.path.isdir(os.path.join(results, d)))
  assert studies
  for study in studies:
    manifest = collect.read_manifest(os.path.join(results, study))
    assert manifest is not None, f'{study}: no manifest.json'
    assert manifest['study'] == study and collect.check_name(study, 'study')
    assert len(manifest['question'].split()) >= 10, f'{study}: the question, in a paragraph'
    assert manifest['command'].strip(), f'{study}: the command that makes it'
    arms = manifest['arms']
    for arm, spec in arms.items():
      collect.check_name(arm)
      assert {'config', 'args', 'set', 'seeds'} <= set(spec), (study, arm)
      assert os.path.exists(os.path.join(ROOT, spec['config'])), (study, arm, spec['config'])
      for seed in spec['seeds']:
        folder = os.path.join(results, study, arm, f'seed{seed}')
        missing = [f for f in RUN_FILES if not os.path.exists(os.path.join(folder, f))]
        assert not missing, f'{study}/{arm}/seed{seed}: no {missing}'
    for entry in os.listdir(os.path.join(results, study)):
      path = os.path.join(results, study, entry)
      if not os.path.isdir(path):
        continue
      assert entry in arms, f'{study}/{entry}: a folder that no arm of the manifest names'
      seeds = {f'seed{s}' for s in arms[entry]['seeds']}
      folders = {d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))}
      assert folders == seeds, f'{study}/{entry}: seeds other than the manifest\'s'
  for dirpath, _, files in os.walk(results):
    assert not [f for f in files if f.endswith('.log')], f'{dirpath}: machine logs'


def test_record_arm_keeps_one_experiment_per_arm(tmp_path):
  root = str(tmp_path)
  spec = dict(config='configs/resnet20.py', args='policy=clr', sets=['num_steps=10'])
  collect.record_arm(root, 'study', 'clr', seed=1, command='cmd', **spec)
  m = collect.record_arm(root, 'study', 'clr', seed=0, command='other', **spec)
  assert m == {'study': 'study', 'question': '', 'command': 'cmd', 'arms': {'clr': {
      'config': 'configs/resnet20.py', 'args': 'policy=clr', 'set': ['num_steps=10'],
      'seeds': [0, 1]}}}
  with pytest.raises(ValueError, match='another experiment'):
    collect.record_arm(root, 'study', 'clr', seed=2, **{**spec, 'args': 'policy=pclr'})
  with pytest.raises(ValueError, match='at most 48 characters'):
    collect.record_arm(root, 'study', 'x' * 49, seed=0, **spec)
  assert run_lib.run_dir(root, 'configs/resnet20.py', 'policy=clr', 3, study='s', arm='a') == (
      os.path.join(root, 's', 'a', 'seed3'))
  with pytest.raises(ValueError, match='--arm'):
    run_lib.run_dir(root, 'configs/resnet20.py', 'policy=clr', 0, ['schedule.max_lr=1.0'] * 9)


def test_runner_user_errors_are_one_line_before_anything_runs(tmp_path, capsys):
  root = str(tmp_path / 'results')
  cfg = os.path.join(CONFIGS, 'resnet20.py')
  long_sets = ['--set', 'schedule.max_lr=1.0', '--set', 'num_steps=3', '--set',
               'data.train_subset=100', '--set', 'model.virtual_batch_size=0']
  collect.record_arm(root, 'resnet20', 'clr', config=os.path.relpath(cfg, ROOT), args='policy=clr',
                     sets=[], seed=0)
  for argv in (['--args', 'policy=clr', *long_sets],                  # an unnamed long arm
               ['--args', 'policy=clr', '--set', 'schedule.nope=1'],  # a mistyped field
               ['--args', 'policy=pclr', '--arm', 'clr']):            # another arm's name
    assert run_lib.main(['--config', cfg, '--results', root, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith('superconv: ') and err.count('\n') == 1, err
  assert sorted(os.listdir(os.path.join(root, 'resnet20'))) == ['manifest.json']
