"""Reliability: exact resume after a preemption at any update, SIGTERM/SIGINT, unreadable
checkpoints, divergence, bad configs and bad data, determinism. docs/reliability.md lists each
fault, what the user sees, and the test here that checks it.

Most tests drive the real CLI (`python -m superconv.main`) in a subprocess on the 8-update smoke
config (ResNet-8 on generated data, ~10 s on 2 CPU cores): logs every 2 updates, evaluates and
checkpoints every 4.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import default as default_config
from configs import resnet56
from superconv import checkpoint as ckpt_lib
from superconv import config_lib
from superconv import configure
from superconv import metrics
from superconv import optim
from superconv import sharding
from superconv import step as step_lib
from superconv import train
from superconv import workdir as workdir_lib
from superconv.data import pipeline

from conftest import ROOT
from test_data import write_folders, write_idx

SMOKE = 'configs/resnet56.py:tiny'
TIMING = ('images_per_sec',)


@pytest.fixture(scope='session')
def cli(run_cli):
  """`cli(workdir, *overrides, config=SMOKE, env=None)`: the program, launched through conftest."""
  return lambda workdir, *extra, config=SMOKE, **kw: run_cli(
      f'--config={config}', '--config.progress_bar=False', *extra, workdir=workdir, **kw)


def _rows(workdir):
  """metrics.jsonl without its timing fields (the only ones allowed to differ between runs)."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in f if l.strip()]


def _ckpt_steps(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def _saved_state(workdir, step):
  """A checkpointed TrainState as a dict of host arrays, read without knowing its structure."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  return jax.device_get(ocp.StandardCheckpointer().restore(path))


def _assert_same_state(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) > 10
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)


def _snapshot(folder):
  """Every file below `folder` (relative path -> bytes): equal snapshots, nothing written."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def _assert_clean_failure(result, code, *needles):
  """Exit `code`, one 'superconv: ...' message containing every needle, no Python traceback."""
  assert result.returncode == code, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith('superconv: ')]
  assert lines, result.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


@pytest.fixture(scope='module')
def reference(cli, tmp_path_factory):
  """The uninterrupted smoke run every interrupted run must reproduce exactly."""
  workdir = str(tmp_path_factory.mktemp('reference') / 'run')
  result = cli(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _ckpt_steps(workdir) == [4, 8]
  assert [r['step'] for r in _rows(workdir)] == [2, 4, 6, 8]
  # progress_bar=False: each row and each evaluation is one log line.
  assert len(re.findall(r'\] update \d/8: lr \S+, momentum', result.stderr)) == 4
  assert len(re.findall(r'\] update [48]/8: eval accuracy', result.stderr)) == 2
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
  return workdir


# ------------------------------------------------------------------------------------------------
# 1-2. Preemption and exact resume


def test_preemption_at_an_odd_update_resumes_exactly(cli, reference, tmp_path):
  # SIGINT right after update 3: inside the first CLR half cycle, between log rows (every 2) and
  # checkpoints (every 4), with the metric sums of update 3 pending. The hook sends the signal
  # through the real handler at an exact update.
  c = resnet56.get_config('tiny')
  assert 3 % c.log_every_steps and 3 % c.checkpoint_every_steps and 3 < c.schedule.step_size
  workdir = str(tmp_path / 'run')
  result = cli(workdir, env={train.SIGNAL_AT_STEP_ENV: '3:SIGINT'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Received SIGINT: saved a checkpoint at update 3 of 8' in result.stdout
  # Said at once, on stderr: what finishes first and how to abort instead.
  told = [l for l in result.stderr.splitlines() if l.startswith('superconv: received SIGINT')]
  assert len(told) == 1 and 'queued on the device finish first' in told[0], result.stderr[-2000:]
  assert 'press Ctrl-C again to abort without saving' in told[0]
  assert _ckpt_steps(workdir) == [3]
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))  # the run is not finished
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))  # released
  assert _rows(workdir) == _rows(reference)[:1]

  result = cli(workdir)  # the same command again
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from the checkpoint at update 3' in result.stderr
  assert _rows(workdir) == _rows(reference)  # every logged and evaluated number, bit for bit
  _assert_same_state(_saved_state(workdir, 8), _saved_state(reference, 8))
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['resumed_from'] == 3


@pytest.mark.integration  # the program in a subprocess, signalled from outside
def test_sigterm_from_outside_checkpoints_and_exits_cleanly(tmp_path):
  # A long run signalled by another process once it has logged, as a cluster scheduler would.
  workdir = str(tmp_path / 'run')
  env = {k: v for k, v in os.environ.items() if k != train.SIGNAL_AT_STEP_ENV}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  proc = subprocess.Popen(
      [sys.executable, '-m', 'superconv.main', f'--config={SMOKE}', f'--workdir={workdir}',
       '--config.progress_bar=False', '--config.num_steps=400', '--config.schedule.step_size=200',
       '--config.eval_every_steps=0', '--config.checkpoint_every_steps=0'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    metrics = os.path.join(workdir, 'metrics.jsonl')
    deadline = time.monotonic() + 240
    while not (os.path.exists(metrics) and os.path.getsize(metrics)):
      assert proc.poll() is None and time.monotonic() < deadline, 'the run ended or hung early'
      time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, err[-3000:]
  match = re.search(r'Received SIGTERM: saved a checkpoint at update (\d+) of 400', out)
  assert match, out + err[-3000:]
  step = int(match.group(1))
  assert 2 <= step < 400
  assert _ckpt_steps(workdir) == [step]  # checkpoint_every_steps=0: only the preemption's
  assert 'Traceback' not in err


def _corrupt_step(workdir, step):
  """Overwrites every array data file of a saved step, as a disk error or a cut copy would."""
  hit = 0
  for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', str(step))):
    if os.path.basename(root) == 'd':
      for f in files:
        with open(os.path.join(root, f), 'wb') as fh:
          fh.write(b'garbage')
        hit += 1
  assert hit


def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(cli, reference, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  _corrupt_step(workdir, 8)
  result = cli(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r'Checkpoint at step 8 in \S+ is unreadable \(.+\); trying the previous one',
                   result.stderr)
  assert 'Resumed from the checkpoint at update 4' in result.stderr
  assert 'Traceback' not in result.stderr  # orbax's echo of the failed read is silenced
  aside = os.listdir(os.path.join(workdir, 'checkpoints_unreadable'))
  assert len(aside) == 1 and aside[0].startswith('8.')
  assert _ckpt_steps(workdir) == [4, 8]  # step 8 saved again by the resumed run
  assert _rows(workdir) == _rows(reference)
  _assert_same_state(_saved_state(workdir, 8), _saved_state(reference, 8))


def test_checkpointer_skips_half_written_and_unreadable_steps(tmp_path, caplog):
  tree = {'w': jnp.arange(6.0).reshape(2, 3), 'step': jnp.zeros((), jnp.int32)}
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  for step in (1, 2, 3):
    ck.save(step, {'w': tree['w'] + step, 'step': jnp.asarray(step, jnp.int32)})
  ck.close()
  # Step 3 half-copied (its array store gone), step 2 with truncated arrays.
  shutil.rmtree(os.path.join(tmp_path, 'checkpoints', '3', 'default'))
  _corrupt_step(str(tmp_path), 2)
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  state, step = ck.restore_latest(tree)
  assert step == 1
  np.testing.assert_array_equal(state['w'], np.arange(6.0).reshape(2, 3) + 1)
  warned = [r.getMessage() for r in caplog.records if 'is unreadable' in r.getMessage()]
  assert len(warned) == 2 and 'step 3' in warned[0] and 'step 2' in warned[1]
  assert ck.steps() == [1]
  ck.save(2, tree)  # possible again: the unreadable folders were set aside
  assert ck.steps() == [1, 2]
  ck.close()
  assert len(os.listdir(os.path.join(tmp_path, 'checkpoints_unreadable'))) == 2
  # Nothing readable at all: an error that says what to do, and nothing is moved.
  _corrupt_step(str(tmp_path), 1)
  _corrupt_step(str(tmp_path), 2)
  ck = ckpt_lib.Checkpointer(str(tmp_path))
  with pytest.raises(ckpt_lib.CheckpointError, match=r'none of the checkpoints \[2, 1\]'):
    ck.restore_latest(tree)
  assert ck.steps() == [1, 2]
  ck.close()
  # An empty workdir is a fresh start.
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'fresh'))
  assert ck.restore_latest(tree) == (None, None)
  ck.close()


def test_changed_config_on_an_old_workdir_is_refused_not_restarted(cli, reference, tmp_path):
  # Another model on the same workdir: refused by the workdir's config.json first; passed on
  # purpose (allow_config_change), no checkpoint fits. Silently training from scratch (or
  # setting the old run aside) would lose it; the run stops and says why.
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  before = _snapshot(workdir)
  result = cli(workdir, '--config.model.name=lenet')
  _assert_clean_failure(result, 2, "model.name (config.json 'resnet8', now 'lenet')",
                        'use a new --workdir', '--config.allow_config_change=True')
  assert _snapshot(workdir) == before
  result = cli(workdir, '--config.model.name=lenet', '--config.allow_config_change=True')
  _assert_clean_failure(result, 2, 'none of the checkpoints [8, 4]', 'use a new --workdir')
  assert _snapshot(workdir) == before  # config.json too: the change never took effect
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_unreadable'))


def _rename_batch_stats_to_plain_ema(tree):
  """The BN layout of before Caffe's estimator: leaves 'mean' and 'var', no 'count'."""
  if isinstance(tree, dict) and 'mean_sum' in tree:
    return {'mean': tree['mean_sum'], 'var': tree['var_sum']}
  if isinstance(tree, dict):
    return {k: _rename_batch_stats_to_plain_ema(v) for k, v in tree.items()}
  return tree


def test_checkpoint_of_the_plain_ema_layout_is_refused_with_its_reason(cli, reference, tmp_path):
  # Checkpoints written before BN kept Caffe's sums and count cannot resume exactly (the plain
  # EMA mixed in its (0, 1) start), so they are refused in one line rather than migrated.
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  for step in _ckpt_steps(workdir):
    path = os.path.join(workdir, 'checkpoints', str(step), 'default')
    state = _saved_state(workdir, step)
    state['batch_stats'] = _rename_batch_stats_to_plain_ema(state['batch_stats'])
    shutil.rmtree(path)
    ocp.StandardCheckpointer().save(path, state)
  result = cli(workdir)
  _assert_clean_failure(result, 2, "Caffe's decayed sums", 'use a new --workdir')
  assert _ckpt_steps(workdir) == [4, 8]


# ------------------------------------------------------------------------------------------------
# 3. Divergence


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(cli, tmp_path):
  # max_lr=1e6: CLR 0.1 -> 1e6 over 4 updates. With BN the loss stays finite for a while after
  # the parameters overflow; the non-finite gradient norm catches it.
  workdir = str(tmp_path / 'run')
  result = cli(workdir, '--config.schedule.max_lr=1e6', '--config.checkpoint_every_steps=1')
  line = _assert_clean_failure(result, 3, 'lower maximum learning rate', '--config.mode=lr_range',
                               'The last good checkpoint is update')
  match = re.search(r'non-finite at update (\d+) \(learning rate (\S+), momentum (\S+)\)', line)
  assert match, line
  step, lr, momentum = int(match.group(1)), float(match.group(2)), float(match.group(3))
  c = resnet56.get_config('tiny')
  with c.unlocked():
    c.schedule.max_lr = 1e6
  lr_fn, _ = optim.build_schedules(c)
  assert 0 < step < 8
  assert lr == pytest.approx(float(lr_fn(step)), rel=1e-3)  # the LR that update used
  assert momentum == pytest.approx(0.9)
  # Checkpoints every update up to the divergence, none after; the last one is finite.
  assert _ckpt_steps(workdir) and max(_ckpt_steps(workdir)) == step
  last = _saved_state(workdir, step)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(last['params']))
  assert f'The last good checkpoint is update {step} in ' in line
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))


def test_divergence_before_any_checkpoint_says_so_and_writes_its_row(cli, tmp_path):
  # No checkpoint before the divergence: the message must not promise one, and the row that
  # found the divergence is in metrics.jsonl with its update.
  workdir = str(tmp_path / 'run')
  result = cli(workdir, '--config.schedule.max_lr=1e6', '--config.checkpoint_every_steps=0',
               '--config.log_every_steps=8', '--config.eval_every_steps=0')
  line = _assert_clean_failure(result, 3, 'No checkpoint was saved before it.')
  assert 'last good checkpoint' not in line
  assert _ckpt_steps(workdir) == []
  rows = _rows(workdir)
  step = int(re.search(r'non-finite at update (\d+)', line).group(1))
  assert len(rows) == 1 and rows[0]['diverged_at'] == step
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))  # released


def test_lr_range_divergence_ends_the_sweep_and_is_reported(cli, tmp_path):
  # The paper's range tests run to the end (diverge_factor 0), but a NaN loss still stops them.
  workdir = str(tmp_path / 'range')
  result = cli(workdir, '--config.lr_range.max_lr=1e6', '--config.model.name=lenet',
               config='configs/resnet56_lr_range.py:tiny')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Stopped early: the training loss became nan' in result.stdout
  with open(os.path.join(workdir, 'lr_range.json')) as f:
    report = json.load(f)
  assert report['settings']['diverge_factor'] == 0.0
  at = report['diverged_at']
  assert isinstance(at, int) and 0 < at < 7
  assert len(report['lr']) == at + 1  # the sweep stopped there
  assert report['diverged_lr'] == report['lr'][at]
  assert report['train_loss'][at] in ('nan', 'inf', '-inf')
  assert 'nan' in report['diverge_reason']


# ------------------------------------------------------------------------------------------------
# 4. Bad configuration


def _smoke(**overrides):
  c = resnet56.get_config('tiny')
  with c.unlocked():
    if 'schedule__name' in overrides:  # another schedule: its own fields, from the registry
      c.schedule = optim.schedule_config(overrides.pop('schedule__name'))
    for dotted, value in overrides.items():
      *parents, leaf = dotted.split('__')
      node = c
      for p in parents:
        node = node[p]
      node[leaf] = value
  return c


@pytest.fixture
def compile_seconds():
  """XLA backend compile times (seconds) of everything compiled while the test runs."""
  seconds = []
  name = '/jax/core/compile/backend_compile_duration'

  def listener(event, duration, **kwargs):  # pylint: disable=unused-argument
    if event == name:
      seconds.append(duration)
  jax.monitoring.register_event_duration_secs_listener(listener)
  # The listener does see compilations (a fresh program each time, never cached).
  jax.jit(lambda x: x * len(seconds) + 1.5)(np.ones(3)).block_until_ready()
  assert seconds
  seconds.clear()
  yield seconds
  jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize('overrides, num_devices, pattern', [
    (dict(model__name='resnet57x'), 1, r"config\.model\.name: unknown model 'resnet57x'"),
    (dict(data__name='svhn'), 1, r"config\.data\.name: unknown dataset 'svhn'"),
    (dict(data__train_subset=1000), 1,
     r'config\.data\.train_subset: 1000 is larger than the 256 training examples'),
    (dict(data__source='tfds', data__train_subset=60_000), 1,
     r'config\.data\.train_subset: 60000 is larger than the 50000'),
    (dict(schedule__max_lr=-1.0), 1, r'config\.schedule .*max_lr must be > 0'),
    (dict(schedule__base_lr=5.0), 1, r'config\.schedule .*max_lr must be >= base_lr'),
    (dict(schedule__name='one_cycle', schedule__pct_start=1.5), 1, r'pct_start must be < 1'),
    (dict(num_steps=10), 1, r'schedule\.step_size=4 .* 8-update CLR schedule .* num_steps=10'),
    (dict(schedule__name='multistep', schedule__boundaries=(3, 9)), 1,
     r'schedule\.boundaries=\(3, 9\) has \[9\] >= num_steps=8'),
    (dict(), 3, r'config\.batch_size: 16 is not divisible by the 3 devices'),
    (dict(batch_size=18), 4, r'config\.batch_size: 18 is not divisible by the 4 devices'),
    (dict(model__virtual_batch_size=3), 4,
     r'config\.model\.virtual_batch_size: 3 must divide the per-device batch 4'),
    (dict(momentum_schedule__value=1.0), 1, r'config\.momentum_schedule\.value: must be in \[0, 1\)'),
    (dict(momentum_schedule__name='cyclical', momentum_schedule__min_momentum=0.97), 1,
     r'config\.momentum_schedule\.min_momentum: 0\.97 is above'),
    (dict(optimizer__weight_decay=-1e-4), 1,
     r'config\.optimizer\.weight_decay must be a number >= 0'),
    (dict(optimizer__name='lars'), 1, r'config\.optimizer\.name'),
    (dict(mode='finetune'), 1, r"config\.mode: 'finetune' is not one of"),
    (dict(data__source='files'), 1, r"config\.data\.path: is empty but data\.source='files'"),
])
def test_validate_names_the_field_before_any_compilation(overrides, num_devices, pattern,
                                                         compile_seconds):
  config = _smoke(**overrides)
  with pytest.raises(configure.ConfigError, match=pattern):
    configure.validate(config, num_devices=num_devices)
  # No model is built or compiled (the smoke step takes ~5 s to compile); checking a schedule
  # evaluates it eagerly, which compiles a few scalar kernels of a few milliseconds at most.
  assert len(compile_seconds) <= 4 and sum(compile_seconds) < 0.5, compile_seconds


def test_valid_smoke_config_passes_on_one_and_four_devices():
  for n in (1, 2, 4, 8):
    configure.validate(_smoke(), num_devices=n)  # 16 = 8 x 2


@pytest.mark.parametrize('flag, needles', [
    ('--config.schedule.max_lrr=2', ('--config.schedule.max_lrr', 'no such config field',
                                     'Did you mean "max_lr"')),
    ('--config.schedule.max_lr=abc', ('--config.schedule.max_lr=abc', 'could not convert')),
    ('--config.schedule.max_lr=-2', ('max_lr must be > 0',)),
    ('--config.num_steps=10', ('num_steps=10', 'step_size')),
    ('--config.data.train_subset=1000', ('config.data.train_subset', '1000')),
])
def test_cli_rejects_bad_config_quickly_without_traceback(cli, tmp_path, flag, needles):
  workdir = str(tmp_path / 'run')
  t = time.perf_counter()
  result = cli(workdir, flag)
  elapsed = time.perf_counter() - t
  _assert_clean_failure(result, 2, *needles)
  # Rejected before anything was written, loaded or compiled.
  assert not os.path.exists(os.path.join(workdir, 'config.json'))
  assert 'Compiled' not in result.stderr
  assert elapsed < 30, elapsed  # imports only (a compile + run takes ~10 s more)


def test_fractional_epochs_are_passes_and_too_few_updates_is_an_error():
  from configs import lenet_fashion_mnist  # pylint: disable=g-import-not-at-top
  # 1.5 passes of 60,000 images at batch 512: 175 updates (not one pass's 117).
  assert lenet_fashion_mnist.get_config('policy=1cycle,epochs=1.5').num_steps == 175
  assert lenet_fashion_mnist.get_config('epochs=0.5').num_steps == 468  # batch 64
  with pytest.raises(ValueError, match=r'epochs=0 must be a positive number of passes'):
    lenet_fashion_mnist.get_config('epochs=0')
  with pytest.raises(ValueError, match=r'epochs=0\.0001 at batch 64 is less than one update'):
    lenet_fashion_mnist.get_config('epochs=0.0001')


def test_shrunk_runs_refuse_data_they_would_ignore():
  with pytest.raises(ValueError, match=r'data=x\.tar\.gz with smoke: .* would be ignored'):
    resnet56.get_config('smoke,data=x.tar.gz')


def test_cli_rejects_unknown_config_argument(cli, tmp_path):
  result = cli(str(tmp_path), config='configs/resnet56.py:smok')
  _assert_clean_failure(result, 2, "unknown config argument(s) ['smok']")


# ------------------------------------------------------------------------------------------------
# 5. Bad data (sources.DataError through the CLI)


def _bad_missing(root):
  return str(root / 'nope.tar.gz'), 'cifar10', 'nope.tar.gz does not exist'


def _bad_layout(root):
  (root / 'd').mkdir()
  (root / 'd' / 'README.txt').write_text('not a dataset')
  return str(root / 'd'), 'cifar10', 'no known data layout found'


def _bad_image(root):
  write_folders(root / 'd')
  (root / 'd' / 'train' / 'truck' / 'broken.png').write_bytes(b'\x89PNG not really')
  return str(root / 'd'), 'cifar10', 'cannot decode image train/truck/broken.png'


def _bad_label(root):
  write_idx(root / 'idx', train_labels=[0, 1, 2, 12, 3])
  return (str(root / 'idx'), 'mnist',
          'train-labels-idx1-ubyte.gz: label 12 of example 3 is outside [0, 10)')


def _bad_counts(root):
  write_idx(root / 'idx', n_train=5, train_labels=[1, 2, 3, 4])
  return (str(root / 'idx'), 'mnist',
          'train-images-idx3-ubyte.gz has 5 images but train-labels-idx1-ubyte.gz has 4 labels')


def _bad_not_archive(root):
  (root / 'data.bin').write_bytes(b'\x00' * 100)
  return str(root / 'data.bin'), 'cifar10', 'data.bin is neither a directory nor'


@pytest.mark.parametrize('make', [_bad_missing, _bad_layout, _bad_image, _bad_label, _bad_counts,
                                  _bad_not_archive])
def test_cli_bad_data_is_a_clear_error_naming_the_file(cli, tmp_path, make):
  path, name, needle = make(tmp_path)
  result = cli(str(tmp_path / 'run'), '--config.data.source=files', f'--config.data.path={path}',
               f'--config.data.name={name}', f'--config.data.cache_dir={tmp_path / "cache"}')
  _assert_clean_failure(result, 2, needle)
  assert 'Compiled' not in result.stderr
  assert not os.path.exists(os.path.join(tmp_path, 'run', 'checkpoints'))


# ------------------------------------------------------------------------------------------------
# 6. Determinism


def test_seed_fixes_init_and_data_order():
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = step_lib.build_model(_smoke(), 10)
  tx = optim.create_optimizer(_smoke())

  def state(seed):
    return jax.device_get(step_lib.create_train_state(model, tx, jax.random.PRNGKey(seed),
                                                   (32, 32, 3), mesh))

  def order(s):
    order_key = jax.random.split(s.key, 3)[0]  # as in step_lib._local_train_step
    return np.stack([pipeline.batch_indices(order_key, step, 16, 256) for step in range(4)])

  a, b, other = state(0), state(0), state(1)
  _assert_same_state(a, b)
  np.testing.assert_array_equal(order(a), order(b))
  assert not np.array_equal(order(a), order(other))
  assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a.params),
                                                   jax.tree.leaves(other.params)))


def test_different_seed_changes_the_run(cli, reference, tmp_path):
  # Same seed, separate processes: identical metrics (checked bit for bit by the resume tests
  # above, each a new process against `reference`). A different seed gives a different run.
  workdir = str(tmp_path / 'seed1')
  result = cli(workdir, '--config.seed=1')
  assert result.returncode == 0, result.stderr[-3000:]
  ref, other = _rows(reference), _rows(workdir)
  assert [r['step'] for r in other] == [r['step'] for r in ref]
  assert [r['lr'] for r in other] == [r['lr'] for r in ref]  # same schedule
  assert all(a['train_loss'] != b['train_loss'] for a, b in zip(ref, other))


# ------------------------------------------------------------------------------------------------
# 7. A workdir is one run with one writer; every user error is one line


def test_operational_tags_name_fields_of_the_config():
  # The `[op]` tags of configs/default.py are the one list; each names a field or a section.
  flat = workdir_lib.flatten(default_config.get_config().to_dict())
  tagged = config_lib.operational_fields()
  for field in tagged:
    assert field in flat or any(k.startswith(field + '.') for k in flat), field
  assert {'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps', 'stop_after_steps',
          'progress_bar', 'logging', 'data.cache_dir', 'allow_config_change'} <= tagged
  assert not {'seed', 'num_steps', 'batch_size', 'schedule', 'model', 'optimizer'} & tagged
  assert config_lib.is_operational('logging.wandb.mode')
  assert not config_lib.is_operational('schedule.max_lr')


def test_differences_split_training_from_operational_fields():
  a = _smoke()
  b = _smoke(schedule__max_lr=1.0, log_every_steps=4, data__num_threads=3, seed=1,
             logging__tensorboard=False)
  training, operational = workdir_lib.differences(a.to_dict(), b.to_dict())
  assert training == [('schedule.max_lr', 3.0, 1.0), ('seed', 0, 1)]
  assert [f for f, _, _ in operational] == ['data.num_threads', 'log_every_steps',
                                            'logging.tensorboard']
  # Read back from config.json (tuples as lists), the same config has no difference.
  assert workdir_lib.differences(json.loads(json.dumps(metrics.clean(a.to_dict()))),
                                 a.to_dict()) == ([], [])
  training, _ = workdir_lib.differences({'seed': 0}, {'seed': 0, 'new_field': 1})
  assert training == [('new_field', '<absent>', 1)]
  # A field added to configs/default.py after the run began counts as equal at its default.
  old = a.to_dict()
  del old['model']['dropout_rate']
  assert workdir_lib.differences(old, a.to_dict()) == ([], [])
  assert workdir_lib.differences(old, _smoke(model__dropout_rate=0.5).to_dict())[0] == [
      ('model.dropout_rate', '<absent>', 0.5)]


def _claim_and_record(config, workdir):
  with workdir_lib.claim(config, workdir) as run:
    run.record_config()


def test_claim_refuses_a_changed_training_field_and_records_an_allowed_one(tmp_path):
  workdir = str(tmp_path / 'run')
  _claim_and_record(_smoke(), workdir)
  before = _snapshot(workdir)
  assert set(before) == {'config.json'}  # the lock is gone after the claim
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r'differs in what is trained: schedule\.max_lr \(config\.json 3\.0, '
                           r'now 1\.0\); use a new --workdir .*allow_config_change=True'):
    _claim_and_record(_smoke(schedule__max_lr=1.0), workdir)
  assert _snapshot(workdir) == before
  _claim_and_record(_smoke(log_every_steps=4), workdir)  # operational: allowed, recorded
  _claim_and_record(_smoke(schedule__max_lr=1.0, allow_config_change=True), workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['schedule']['max_lr'] == 1.0
  with open(os.path.join(workdir, workdir_lib.CHANGES_FILE)) as f:
    history = [json.loads(l) for l in f]
  assert history[0]['training'] == {} and history[0]['operational'] == {'log_every_steps': [2, 4]}
  assert history[1]['training'] == {'schedule.max_lr': [3.0, 1.0]}
  assert history[1]['host'] == socket.gethostname()


def _write_lock(workdir, **holder):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, workdir_lib.LOCK_FILE), 'w') as f:
    json.dump({'host': socket.gethostname(), 'since': '2026-01-01T00:00:00+00:00',
               'command': 'python -m superconv.main ...', **holder}, f)


@pytest.mark.parametrize('object_store', [False, True])
def test_lock_names_its_holder_and_a_stale_one_is_taken_over(tmp_path, capfd, object_store):
  # object_store=True: the check-write-read protocol used on gs:// (no exclusive create there),
  # here on a local folder.
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  lock = lambda: workdir_lib.Lock(workdir, object_store=object_store)
  first = lock()
  first.acquire()
  with pytest.raises(workdir_lib.WorkdirError,
                     match=rf'in use by another run \(PID {os.getpid()} on {socket.gethostname()}'):
    lock().acquire()
  first.release()
  assert not os.listdir(workdir)
  # A holder that is gone on this host (a SIGKILLed run): taken over with a warning.
  gone = subprocess.Popen(['true'])
  gone.wait()
  _write_lock(workdir, pid=gone.pid)
  second = lock()
  second.acquire()
  assert 'took over the lock' in capfd.readouterr().err
  with open(os.path.join(workdir, workdir_lib.LOCK_FILE)) as f:
    assert json.load(f)['pid'] == os.getpid()
  second.release()
  # A holder on another machine cannot be checked: refused, naming the file to delete.
  _write_lock(workdir, host='elsewhere', pid=1)
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r'PID 1 on elsewhere.*delete \S+superconv\.lock'):
    lock().acquire()


def test_first_interrupt_is_told_at_once_and_a_second_aborts(capfd):
  told = []
  describe = lambda name: told.append(name) or f'superconv: received {name}'
  with ckpt_lib.PreemptionFlag(describe) as flag:
    os.kill(os.getpid(), signal.SIGINT)
    assert flag.is_set() and told == ['SIGINT']
    assert capfd.readouterr().err == 'superconv: received SIGINT\n'
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.integration  # two programs in subprocesses on one workdir
def test_a_second_run_on_a_busy_workdir_stops_at_once_and_the_first_is_unharmed(cli, tmp_path):
  workdir = str(tmp_path / 'run')
  env = {k: v for k, v in os.environ.items() if k != train.SIGNAL_AT_STEP_ENV}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  first = subprocess.Popen(
      [sys.executable, '-m', 'superconv.main', f'--config={SMOKE}', f'--workdir={workdir}',
       '--config.progress_bar=False'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    lock = os.path.join(workdir, workdir_lib.LOCK_FILE)
    deadline = time.monotonic() + 240
    while not os.path.exists(lock):
      assert first.poll() is None and time.monotonic() < deadline, 'the first run ended early'
      time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # held while the second run starts: no race on timing
    try:
      second = cli(workdir)
    finally:
      first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=240)
  finally:
    if first.poll() is None:
      first.kill()
  _assert_clean_failure(second, 2, f'is in use by another run (PID {first.pid} on',
                        'use another --workdir')
  assert first.returncode == 0, err[-3000:]
  steps = [r['step'] for r in _rows(workdir)]
  assert steps == [2, 4, 6, 8]  # strictly increasing: one writer
  assert not os.path.exists(lock)  # released at the end
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['steps'] == 8


def test_a_changed_training_field_on_a_finished_run_is_refused_and_nothing_changes(
    cli, reference, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  before = _snapshot(workdir)
  result = cli(workdir, '--config.schedule.max_lr=1.0')
  _assert_clean_failure(result, 2, 'schedule.max_lr (config.json 3.0, now 1.0)',
                        'use a new --workdir', '--config.allow_config_change=True')
  assert _snapshot(workdir) == before  # config.json byte-identical, nothing added
  # An operational change on the finished run: nothing to train; summary.json is kept as the
  # run wrote it (its timings included), the change is recorded.
  result = cli(workdir, '--config.log_every_steps=4')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'holds a finished run (update 8 of 8)' in result.stdout
  after = _snapshot(workdir)
  assert after['summary.json'] == before['summary.json']
  assert after['metrics.jsonl'] == before['metrics.jsonl']
  changes = json.loads(after[workdir_lib.CHANGES_FILE])
  assert changes['operational'] == {'log_every_steps': [2, 4]} and changes['training'] == {}


# The user errors of docs/reliability.md's table "Every user error is one line": the id of each
# case is the table's Test column entry. Each case: (argv, run from the repository root?, what
# the one line says). `{tmp}` is the test's folder; `WORKDIR` a fresh folder under it.
def _resolved_tiny_config():
  c = resnet56.get_config('tiny')
  c.progress_bar = False
  return metrics.clean(configure.resolve(c).to_dict())


def _setup_recorded_run(tmp):
  os.makedirs(tmp / 'run')
  with open(tmp / 'run' / 'config.json', 'w') as f:
    json.dump(_resolved_tiny_config(), f, indent=2, sort_keys=True)


def _setup_busy(tmp):
  _write_lock(str(tmp / 'run'), pid=os.getpid(),
              process_start=workdir_lib.process_start(os.getpid()))


USER_ERRORS = {
    'missing_config': (['--config=configs/nope.py'], False, 'no such config file'),
    'config_from_another_folder': (['--config=configs/resnet56.py:tiny'], False,
                                   "no such config file", "superconv's own resnet56.py is "),
    'unknown_field': (['--config.schedule.max_lrr=2'], True, 'no such config field',
                      'Did you mean "max_lr"'),
    'unparsable_value': (['--config.schedule.max_lr=abc'], True, 'could not convert'),
    'invalid_value': (['--config.schedule.max_lr=-2'], True, 'max_lr must be > 0'),
    'unknown_config_argument': (['--config=configs/resnet56.py:smok'], True,
                                "unknown config argument(s) ['smok']"),
    'no_workdir': (['--workdir='], True, '--workdir'),
    'workdir_cannot_be_created': (['--workdir={tmp}/a_file/run'], True,
                                  'cannot create or write the workdir', 'NotADirectoryError'),
    'workdir_not_writable': (['--workdir=/sys/fs/superconv-test/run'], True,
                             'cannot create or write the workdir'),
    'changed_training_field': (['--config.seed=1', '--workdir={tmp}/run'], True,
                               'seed (config.json 0, now 1)', 'allow_config_change=True'),
    'busy_workdir': (['--workdir={tmp}/run'], True, 'is in use by another run (PID'),
    'missing_data': (['--config.data.source=files', '--config.data.path={tmp}/nope.tar.gz'], True,
                     'nope.tar.gz does not exist'),
    'eval_without_checkpoint': (['--config.mode=eval'], True, 'holds no checkpoint to evaluate'),
}
_SETUP = {'changed_training_field': _setup_recorded_run, 'busy_workdir': _setup_busy}
_ABSL_LOG_LINE = re.compile(r'^[IWEF]\d{4} ')


@pytest.mark.parametrize('case', sorted(USER_ERRORS))
def test_cli_user_error_is_one_line_and_writes_nothing(run_cli, tmp_path, case):
  argv, from_root, *needles = USER_ERRORS[case]
  if case == 'workdir_not_writable':
    try:
      os.makedirs('/sys/fs/superconv-test/run')
    except OSError:
      pass  # as expected: /sys cannot hold a folder
    else:
      shutil.rmtree('/sys/fs/superconv-test')
      pytest.skip('/sys/fs is writable here')
  (tmp_path / 'a_file').write_text('not a folder')
  _SETUP.get(case, lambda tmp: None)(tmp_path)
  before = _snapshot(tmp_path)
  argv = [a.replace('{tmp}', str(tmp_path)) for a in argv]
  if not any(a.startswith('--config=') for a in argv):
    argv.insert(0, f'--config={SMOKE}')
  if not any(a.startswith('--workdir') for a in argv):
    argv.append(f'--workdir={tmp_path / "fresh"}')
  result = run_cli(*argv, '--config.progress_bar=False', cwd=None if from_root else tmp_path,
                   timeout=300)
  line = _assert_clean_failure(result, 2, *needles)
  others = [l for l in result.stderr.splitlines() if l != line and not _ABSL_LOG_LINE.match(l)]
  assert not others, others  # the one line, besides the program's log lines
  assert _snapshot(tmp_path) == before  # nothing written: no workdir, no file changed
  assert not os.path.exists(tmp_path / 'fresh')


def _documented_user_errors() -> set[str]:
  """The cases named in the Test column of docs/reliability.md's tables."""
  rows = [l for l in open(os.path.join(ROOT, 'docs', 'reliability.md')) if l.startswith('| ')]
  return {m for row in rows for m in re.findall(
      r'test_cli_user_error_is_one_line_and_writes_nothing\[(\w+)\]', row.split('|')[-2])}


def test_reliability_doc_lists_every_user_error_case_and_names_real_tests():
  assert _documented_user_errors() == set(USER_ERRORS)
  # Every test the document names exists (in this file or the file the row names).
  text = open(os.path.join(ROOT, 'docs', 'reliability.md')).read()
  sources = ''.join(open(os.path.join(ROOT, 'tests', f)).read()
                    for f in os.listdir(os.path.join(ROOT, 'tests')) if f.endswith('.py'))
  named = set(re.findall(r'`(?:tests/\w+\.py::)?(test_\w+)', text)) - {'test_error_'}  # a prefix
  assert len(named) > 20
  missing = sorted(n for n in named if f'def {n}(' not in sources)
  assert not missing, missing
