"""The train step and loop: multi-device equivalence, single compilation, CLI end to end, resume."""

import json
import os
import shutil

import jax
import numpy as np
import optax
import pytest

from configs import resnet56
from superconv import models
from superconv import sharding
from superconv import step as step_lib


def _tiny_problem(n=64, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, size=(n,)).astype(np.int32)
  mean = images.astype(np.float32).mean(0)
  return {'images': images, 'labels': labels, 'mean': mean}


def _run(mesh_devices, virtual_batch_size, steps=2, batch=16):
  mesh = sharding.make_mesh(mesh_devices)
  model = models.create_model('resnet8', num_classes=10, virtual_batch_size=virtual_batch_size,
                               bn_momentum=0.9)
  tx = optax.sgd(0.1, momentum=0.9)
  spec = step_lib.StepSpec(batch_size=batch, mirror=True, crop_padding=2, scale=1 / 64)
  state = step_lib.create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 3), mesh)
  fn = step_lib.make_train_fn(model, tx, mesh, spec, steps)
  state = fn(state, sharding.replicate(_tiny_problem(), mesh))
  return jax.device_get(state)


def test_one_and_four_devices_give_the_same_update():
  # 4 devices x 4 images with per-device BN == 1 device with BN groups of 4 (the paper's
  # 8 GPUs x 125 reproduced on one device).
  assert jax.device_count() >= 4
  four = _run(jax.devices()[:4], virtual_batch_size=0)
  one = _run(jax.devices()[:1], virtual_batch_size=4)
  for a, b in zip(jax.tree.leaves(four.params), jax.tree.leaves(one.params)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
  for a, b in zip(jax.tree.leaves(four.batch_stats), jax.tree.leaves(one.batch_stats)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(four.sums['loss'], one.sums['loss'], rtol=1e-5)
  # And the update did something: parameters moved from their initial values.
  init = jax.device_get(step_lib.create_train_state(
      models.create_model('resnet8', num_classes=10), optax.sgd(0.1), jax.random.PRNGKey(0),
      (8, 8, 3), sharding.make_mesh(jax.devices()[:1])))
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init.params),
                                                 jax.tree.leaves(one.params))]
  assert any(moved)


def test_whole_batch_bn_differs_from_grouped_bn():
  # The equivalence above is not vacuous: one device with BN over all 16 images differs.
  whole = _run(jax.devices()[:1], virtual_batch_size=0)
  grouped = _run(jax.devices()[:1], virtual_batch_size=4)
  assert not np.allclose(whole.sums['loss'], grouped.sums['loss'], rtol=1e-6)


def test_train_step_compiles_once_and_counts_steps():
  mesh = sharding.make_mesh(jax.devices()[:2])
  model = models.create_model('lenet', num_classes=10)
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(0.1, 0.0, 10),
                                           momentum=0.9)
  spec = step_lib.StepSpec(batch_size=8)
  data = _tiny_problem()
  data['images'] = np.zeros((64, 28, 28, 1), np.uint8) + data['images'][:, :1, :1, :1]
  data['mean'] = np.zeros((28, 28, 1), np.float32)
  state = step_lib.create_train_state(model, tx, jax.random.PRNGKey(1), (28, 28, 1), mesh)
  fn = step_lib.make_train_fn(model, tx, mesh, spec, 3)
  data = sharding.replicate(data, mesh)
  for _ in range(3):
    state = fn(state, data)
  assert int(state.step) == 9
  assert int(state.sums['steps']) == 9
  assert fn._cache_size() == 1  # pylint: disable=protected-access


def test_batch_not_divisible_by_devices_is_rejected():
  mesh = sharding.make_mesh(jax.devices()[:4])
  model = models.create_model('lenet', num_classes=10)
  with pytest.raises(ValueError, match='not divisible by the 4 devices'):
    step_lib.make_train_fn(model, optax.sgd(0.1), mesh, step_lib.StepSpec(batch_size=10), 1)


def test_dispatch_size_lands_on_every_boundary():
  c = resnet56.get_config()
  assert step_lib.dispatch_size(c, backend='gpu') == 10
  with c.unlocked():
    c.log_every_steps, c.steps_per_dispatch = 25, 20
  assert step_lib.dispatch_size(c, backend='gpu') == 5
  assert step_lib.dispatch_size(c, backend='cpu') == 1   # 25: no divisor of 4 but 1
  with c.unlocked():
    c.log_every_steps = 100
  assert step_lib.dispatch_size(c, backend='cpu') == 4   # a 10,000-update run: unrolled
  with c.unlocked():
    c.log_every_steps = 50
  assert step_lib.dispatch_size(c, backend='cpu') == 2
  with c.unlocked():
    c.num_steps = 999                                    # shorter than cpu_unroll_min_steps
  assert step_lib.dispatch_size(c, backend='cpu') == 1


def test_unrolled_cpu_updates_equal_one_update_per_call():
  # On the CPU k updates per call are an unrolled scan: the same updates as k calls.
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = models.create_model('lenet', num_classes=10)
  tx = optax.sgd(0.05, momentum=0.9)
  spec = step_lib.StepSpec(batch_size=8)
  data = _tiny_problem()
  data['images'] = np.repeat(np.repeat(data['images'][:, :7, :7, :1], 4, 1), 4, 2)
  data['mean'] = np.zeros((28, 28, 1), np.float32)
  data = sharding.replicate(data, mesh)
  init = lambda: step_lib.create_train_state(model, tx, jax.random.PRNGKey(2), (28, 28, 1), mesh)
  three = step_lib.make_train_fn(model, tx, mesh, spec, 3)
  one = step_lib.make_train_fn(model, tx, mesh, spec, 1)
  convs = lambda fn: fn.lower(init(), data).compile().as_text().count('convolution(')
  assert convs(three) == 3 * convs(one) > 0  # three copies of the update, not one loop body
  state = three(init(), data)
  ref = init()
  for _ in range(3):
    ref = one(ref, data)
  assert int(state.step) == int(ref.step) == 3
  for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(jax.device_get(ref))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture
def cli(run_cli):
  """`cli(workdir, *overrides, config=..., env=None)`: the program, launched through conftest."""
  return lambda workdir, *extra, config='configs/resnet56.py:tiny', **kw: run_cli(
      f'--config={config}', '--config.progress_bar=False', *extra, workdir=workdir, **kw)


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(l) for l in f]
  timing = ('images_per_sec',)
  return [{k: v for k, v in r.items() if k not in timing} for r in rows]


def test_readme_smoke_run_learns(cli, tmp_path):
  """The README's first command: ResNet-56's `smoke` (ResNet-8, 32 updates of the Fig. 1a CLR
  shape at peak 0.06) on the generated set. Measured on the 2-core CPU, seeds 0-2: 0.70, 0.80,
  0.78 final eval accuracy (chance 0.10); at the paper's peak of 3.0 it ended at 0.10 with an
  eval loss of 5e5. The end-of-run note says what was seen and what to run next."""
  workdir = str(tmp_path / 'run')
  result = cli(workdir, config='configs/resnet56.py:smoke')
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['steps'] == 32 and summary['final_eval_accuracy'] >= 0.5
  rows = _rows(workdir)
  assert 0.05 < max(r['lr'] for r in rows) <= 0.06 * (1 + 1e-6)  # the peak, logged at update 16
  # The loss never explodes: every train and eval loss stays below 3x chance's log(10).
  assert all(r[k] < 3 * np.log(10) for r in rows for k in ('train_loss', 'eval_loss') if k in r)
  assert 'against 10% for chance' in result.stdout
  assert '--config=configs/resnet56.py:data=PATH/cifar10-jpeg.tar.gz' in result.stdout
  assert '--config=configs/resnet56.py --workdir=' in result.stdout  # the TFDS route
  assert 'shared' not in result.stdout  # no path of the development layout


def test_cli_smoke_run_writes_artifacts_and_resumes_exactly(cli, tmp_path):
  workdir = str(tmp_path / 'run')
  result = cli(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ('config.json', 'metrics.jsonl', 'summary.json'):
    assert os.path.exists(os.path.join(workdir, name)), name
  ckpts = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  assert ckpts[-1] == 8 and 4 in ckpts
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['steps'] == 8 and 0.0 <= summary['final_eval_accuracy'] <= 1.0
  rows = _rows(workdir)
  assert [r['step'] for r in rows] == [2, 4, 6, 8]
  assert {'lr', 'momentum', 'train_loss', 'train_accuracy'} <= set(rows[0])
  assert 'eval_accuracy' in rows[1] and 'eval_accuracy' in rows[3]
  # The smoke schedule is the real one shrunk: CLR 0.1 -> 3.0 -> 0.1 over 8 updates.
  assert rows[1]['lr'] == pytest.approx(3.0 - 2.9 / 4, rel=1e-5)  # value used by update 3

  # Interrupt: drop the final checkpoint, run the same command again; it resumes at 4 and
  # ends with exactly the same metrics as the uninterrupted run.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '8'))
  result = cli(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from the checkpoint at update 4' in result.stderr
  assert _rows(workdir) == rows
  # The best accuracy counts the evaluation made before the interruption (update 4).
  with open(os.path.join(workdir, 'summary.json')) as f:
    resumed = json.load(f)
  assert (resumed['best_eval_accuracy'], resumed['best_step']) == (
      summary['best_eval_accuracy'], summary['best_step'])
  assert resumed['final_eval_accuracy'] == summary['final_eval_accuracy']


def test_cli_rejects_unknown_override(cli, tmp_path):
  result = cli(str(tmp_path), '--config.schedule.max_lrr=2.0')
  assert result.returncode != 0
  assert 'max_lrr' in result.stderr


def test_lr_estimate_is_logged_during_training(cli, tmp_path):
  workdir = str(tmp_path / 'est')
  result = cli(workdir, '--config.lr_estimate.enabled=True', '--config.model.name=lenet',
               '--config.schedule.base_lr=0.001', '--config.schedule.max_lr=0.01',
               '--config.data.scale=0.01')
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _rows(workdir)
  assert all('lr_estimate' in r and 'lr_estimate_ema' in r for r in rows)
  # A positive, finite estimate; the EMA moved away from its 0.1 start.
  assert all(0 < r['lr_estimate'] < 1e4 for r in rows)
  assert rows[-1]['lr_estimate_ema'] != 0.1


def test_help_lists_both_flags(run_cli):
  done = run_cli('--help', timeout=120)  # absl's --help exits 1 after printing
  assert '--config: A configs/*.py file' in done.stdout and '--workdir:' in done.stdout


def test_smoke_with_data_is_refused_not_ignored(run_cli, tmp_path):
  done = run_cli('--config=configs/resnet56.py:smoke,data=x.tar.gz', workdir=tmp_path / 'run',
                 timeout=120)
  assert done.returncode == 2 and 'the data would be ignored' in done.stderr, done.stderr[-2000:]
  assert not (tmp_path / 'run').exists()
