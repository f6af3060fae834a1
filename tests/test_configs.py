"""Every configs/*.py, with each documented argument and its `smoke` variant, is a runnable run.

For every (file, argument): the config loads from its path (as `config_flags` does), is locked,
passes `configure.validate`, its model initialises on the dataset's image shape
(`jax.eval_shape`, no compute) with logits [B, classes], its optimizer initialises on those
parameters, and its LR schedule has the run's length, checked on closed-form values at the
phase boundaries. A table pins the settings each file takes from the paper digest.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from experiments import dump_configs
from superconv import configure
from superconv import optim
from superconv import step as step_lib
from superconv.data import sources

from conftest import ROOT

NOT_CONFIGS = ('__init__', 'common')
STEMS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
               if os.path.basename(p)[:-3] not in NOT_CONFIGS)


@functools.lru_cache(maxsize=None)
def load(stem: str):
  """Imports configs/<stem>.py by path, as ml_collections.config_flags does."""
  path = os.path.join(ROOT, 'configs', f'{stem}.py')
  spec = importlib.util.spec_from_file_location(f'_config_{stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# Every file, each documented variant and its `smoke` / `tiny` forms: the cases the config dump
# of a refactor compares.
CASES = dump_configs.cases()


def _image_shape(config) -> tuple[int, int, int]:
  spec = sources.SPECS[config.data.name]
  return spec.fake_shape if config.data.source == 'fake' else spec.image_shape


_SHAPES: dict = {}


def _abstract_init(model, model_key: str, shape: tuple[int, ...], batch: int):
  """Variable and logit shapes of `model` (no compute); cached as many rows share a network."""
  key = (model_key, shape, batch)
  if key not in _SHAPES:
    rng = jax.random.PRNGKey(0)
    x = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(rng, x), x)
    logits = jax.eval_shape(lambda v, x: model.apply(*v, x, train=False)[0], variables, x)
    _SHAPES[key] = variables, logits
  return _SHAPES[key]


def _at(fn, step: int) -> float:
  return float(fn(jnp.asarray(step, jnp.int32)))


def _check_schedule_fits(config) -> None:
  """The LR schedule's own length is num_steps, read off values at its phase boundaries."""
  n, s, m = config.num_steps, config.schedule, config.momentum_schedule
  lr, momentum = optim.build_schedules(config)
  length = optim.schedule_length(config)
  assert length is None or length == n
  approx = functools.partial(pytest.approx, rel=1e-5, abs=1e-8)
  if s.name == 'triangular':  # one cycle ending back at base exactly at the last update
    assert 2 * s.step_size * s.num_cycles == n
    assert _at(lr, s.step_size) == approx(s.max_lr)
    assert _at(lr, n) == approx(s.base_lr)
  elif s.name == 'caffe_one_cycle':  # peak at ss, floor from 2 ss on, inside the run
    assert 2 * s.step_size <= n
    assert _at(lr, 0) == approx(s.base_lr)
    assert _at(lr, s.step_size) == approx(s.max_lr)
    assert _at(lr, 2 * s.step_size) == approx(s.base_lr / s.floor_div)
    assert _at(lr, n) == approx(s.base_lr / s.floor_div)
  elif s.name == 'lr_range':  # the sweep reaches its top at the last update
    assert config.mode == 'lr_range' and config.lr_range.num_steps == n
    assert _at(lr, 0) == approx(config.lr_range.min_lr)
    assert _at(lr, n) == approx(config.lr_range.max_lr)
  elif s.name == 'multistep':  # every drop happens inside the run
    assert all(0 < b < n for b in s.boundaries)
    assert _at(lr, n) == approx(s.base_lr * s.gamma ** len(s.boundaries))
  elif s.name == 'one_cycle':
    assert _at(lr, 0) == approx(s.max_lr / s.div_factor)
  if m.name == 'cyclical':  # lowest momentum where the LR peaks
    assert _at(momentum, m.step_size or s.step_size) == approx(m.min_momentum)
  elif m.name == 'constant':
    assert _at(momentum, n // 2) == approx(m.value)


@pytest.mark.parametrize('stem,arg', CASES, ids=[f'{s}:{a}' for s, a in CASES])
def test_config_validates_builds_and_fits(stem, arg):
  config = load(stem).get_config(arg)
  with pytest.raises((AttributeError, KeyError)):  # locked: a mistyped override fails
    config.not_a_field = 1
  configure.validate(config, num_devices=1)
  if 'smoke' in arg or 'tiny' in arg:
    assert config.data.source == 'fake'
    assert config.num_steps <= (32 if 'smoke' in arg else 8) and config.batch_size <= 32

  assert 'num_classes' not in config.model  # the class count is the dataset's
  num_classes = sources.num_classes(config.data.name)
  assert set(config.schedule) == {'name', *optim.SCHEDULES[config.schedule.name].fields}
  shape = tuple(_image_shape(config))
  batch = config.model.virtual_batch_size or 2
  model = step_lib.build_model(config, num_classes)
  # The class count is part of the network (it is no longer a model field).
  variables, logits = _abstract_init(model, f'{config.model.to_json()}/{num_classes}', shape,
                                     batch)
  assert logits.shape == (batch, num_classes) and logits.dtype == jnp.float32

  tx = optim.create_optimizer(config)
  jax.eval_shape(tx.init, variables[0])
  optim.check_schedule(config)
  _check_schedule_fits(config)


@pytest.mark.parametrize('stem', [s for s in STEMS if s != 'default'])
def test_config_file_documents_itself(stem):
  module = load(stem)
  doc = module.__doc__
  assert 'python -m ' in doc and f'configs/{stem}.py' in doc, 'the command to run it'
  assert 'Hardware and time' in doc
  assert 'Arguments' in doc
  # Each documented argument changes the run: none is silently ignored (only the default ''
  # may equal a spelled-out variant).
  resolved = {}
  for variant in module.VARIANTS:
    resolved.setdefault(module.get_config(variant).to_json(), []).append(variant)
  assert all(len(vs) == 1 or (len(vs) == 2 and '' in vs) for vs in resolved.values()), resolved


@pytest.mark.parametrize('stem', [s for s in STEMS if s != 'default'])
def test_common_arguments_and_typos(stem):
  get_config = load(stem).get_config
  c = get_config('data=/tmp/some/cifar,seed=7')
  assert (c.data.source, c.data.path, c.seed) == ('files', '/tmp/some/cifar', 7)
  with pytest.raises(ValueError, match='unknown config argument'):
    get_config('not_an_argument=3')


@pytest.mark.parametrize('stem,arg', [
    ('resnet56_stepsize', 'stepsize=1234'), ('resnet56_subset', 'samples=5000'),
    ('resnet56_optimizers', 'opt=sgdr'), ('lenet_mnist', 'policy=1cycle,epochs=13'),
    ('resnet56_regularization', 'sweep=wd,value=3e-4'), ('resnext56', 'clip=3'),
])
def test_values_outside_the_paper_rows_are_rejected(stem, arg):
  with pytest.raises(ValueError, match='is not one of'):
    load(stem).get_config(arg)


# (file, argument) -> settings from the paper digest (section in the comment).
PAPER_SETTINGS = [
    # §2.1 Fig. 1a: CLR 0.1-3, SS 5k, 10k updates, TBS 1000, MAF 0.95, momentum 0.9.
    ('resnet56', '', dict(num_steps=10_000, batch_size=1000, **{
        'schedule.name': 'triangular', 'schedule.base_lr': 0.1, 'schedule.max_lr': 3.0,
        'schedule.step_size': 5000, 'model.bn_momentum': 0.95, 'momentum_schedule.value': 0.9,
        'optimizer.weight_decay': 1e-4, 'optimizer.bias_lr_mult': 2.0, 'model.name': 'resnet56'})),
    ('resnet56_baseline', '', {'num_steps': 80_000, 'schedule.name': 'multistep',
                               'schedule.base_lr': 0.35, 'schedule.boundaries': (50_000, 70_000),
                               'schedule.gamma': 0.1, 'model.bn_momentum': 0.999}),
    ('resnet56_stepsize', 'stepsize=3000', {'num_steps': 6000, 'model.bn_momentum': 0.95}),
    ('resnet56_stepsize', 'stepsize=1000,bn=tab1b', {'num_steps': 2000,
                                                     'model.bn_momentum': 0.80}),
    ('resnet56_stepsize', 'stepsize=10000,bn=tab1b', {'num_steps': 20_000,
                                                      'model.bn_momentum': 0.97}),
    # §3.2 Fig. 2b: linear 0 -> 3 over 20k.
    ('resnet56_lr_range', 'iters=20000', {'mode': 'lr_range', 'num_steps': 20_000,
                                          'lr_range.min_lr': 0.0, 'lr_range.max_lr': 3.0}),
    # §2.2 Table 1.
    ('resnet56_subset', 'policy=clr,samples=10000', {'data.train_subset': 10_000,
                                                     'num_steps': 10_000}),
    ('resnet56_subset', 'policy=pclr,samples=50000', {'data.train_subset': 0,
                                                      'num_steps': 80_000}),
    # §2.3: ResNet-110 at TBS 800.
    ('resnet110', 'policy=clr', {'batch_size': 800, 'model.name': 'resnet110'}),
    ('resnet20', 'policy=pclr', {'model.name': 'resnet20', 'model.bn_momentum': 0.999}),
    ('resnet56_cifar100', 'policy=clr', {'data.name': 'cifar100'}),
    # §2.4 optimizers (Caffe: Adam b1 = momentum 0.9; AdaDelta rho = 0).
    ('resnet56_optimizers', 'opt=adam', {'optimizer.name': 'adam', 'schedule.base_lr': 0.0035,
                                         'momentum_schedule.value': 0.9}),
    ('resnet56_optimizers', 'opt=adadelta', {'optimizer.rho': 0.0, 'schedule.base_lr': 0.35}),
    ('resnet56_optimizers', 'opt=adagrad', {'optimizer.name': 'adagrad',
                                            'momentum_schedule.value': 0.0}),
    ('resnet56_optimizers', 'opt=nesterov,policy=clr', {'optimizer.nesterov': True,
                                                        'num_steps': 10_000}),
    ('resnet56_regularization', 'sweep=batch,value=1536', {'batch_size': 1536,
                                                           'num_steps': 10_000}),
    ('resnet56_regularization', 'sweep=wd,value=1e-5', {'optimizer.weight_decay': 1e-5}),
    ('resnet56_regularization', 'sweep=dropout,value=0.2,lr_range', {
        'model.dropout_rate': 0.2, 'mode': 'lr_range', 'num_steps': 20_000}),
    ('bottleneck_resnet56', 'clip=5', {'batch_size': 800, 'optimizer.grad_clip_norm': 5.0,
                                       'num_steps': 20_000}),
    ('resnext56', 'clip=10', {'batch_size': 680, 'optimizer.grad_clip_norm': 10.0}),
    # §2.5 / §7.5: TBS 512, updates = epochs * 50000 // 512, SS in epochs likewise.
    ('wide_resnet32', 'policy=1cycle,epochs=50', {
        'num_steps': 4882, 'schedule.step_size': 2246, 'schedule.base_lr': 0.1,
        'schedule.max_lr': 1.0, 'momentum_schedule.max_momentum': 0.95,
        'momentum_schedule.min_momentum': 0.85, 'model.bn_momentum': 0.9}),
    ('densenet40', 'policy=1cycle,epochs=50', {'num_steps': 4882, 'schedule.max_lr': 4.0,
                                               'optimizer.weight_decay': 1e-6}),
    ('densenet40', 'policy=1cycle,epochs=150', {'num_steps': 14_648}),  # the text's 14,648
    ('lenet_mnist', 'policy=1cycle,epochs=12', {'num_steps': 1406, 'schedule.step_size': 585,
                                                'momentum_schedule.min_momentum': 0.8,
                                                'optimizer.weight_decay': 5e-4}),
    ('lenet_mnist', 'policy=inv,epochs=85', {'num_steps': 9960, 'schedule.gamma': 1e-4,
                                             'schedule.power': 0.75}),
    ('lenet_fashion_mnist', 'policy=inv', {'batch_size': 64, 'data.source': 'files',
                                           'data.name': 'fashion_mnist'}),
    # §2.6 ImageNet.
    ('resnet50_imagenet', '', {'num_steps': 200_000, 'schedule.step_size': 95_000,
                               'batch_size': 128, 'optimizer.weight_decay': 3e-6}),
    ('inception_resnet_v2_imagenet', '', {'num_steps': 220_000, 'batch_size': 112,
                                          'momentum_schedule.step_size': 1_080_000}),
]


@pytest.mark.parametrize('stem,arg,expected', PAPER_SETTINGS,
                         ids=[f'{s}:{a}' for s, a, _ in PAPER_SETTINGS])
def test_paper_settings(stem, arg, expected):
  config = load(stem).get_config(arg)
  for field, value in expected.items():
    got = config
    for part in field.split('.'):
      got = got[part]
    got = tuple(got) if isinstance(got, (list, tuple)) else got
    assert got == pytest.approx(value) if isinstance(value, float) else got == value, field


# ---------------------------------------------------------------------------------------------
# A schedule's dict holds only its own fields: a foreign one is a one-line CLI error.


@pytest.mark.parametrize('config,flag,needles', [
    # gamma is a CLR / step / inv field, not a 1cycle one.
    ('configs/resnet56.py:policy=1cycle', '--config.schedule.gamma=0.5',
     ('--config.schedule.gamma', 'no such config field')),
    # base_lr: the 1cycle starts at max_lr / div_factor and has no base.
    ('configs/resnet56.py:policy=1cycle', '--config.schedule.base_lr=0.1',
     ('--config.schedule.base_lr', 'no such config field')),
    # A range test's schedule is only its name; its arguments are config.lr_range.
    ('configs/resnet56_lr_range.py', '--config.schedule.max_lr=2',
     ('--config.schedule.max_lr', 'no such config field')),
])
def test_cli_rejects_a_field_of_another_schedule(run_cli, tmp_path, config, flag, needles):
  result = run_cli(f'--config={config}', flag, workdir=tmp_path / 'run', timeout=120, check=2)
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  line = next(l for l in result.stderr.splitlines() if l.startswith('superconv: '))
  for needle in needles:
    assert needle in line, (needle, line)
  assert not os.path.exists(tmp_path / 'run' / 'config.json')


def test_a_config_file_loads_from_any_working_directory(tmp_path):
  """configs/ is a folder of the repository, not an installed package: a config named by its
  path imports its sibling `configs.common` from any working directory."""
  path = os.path.join(ROOT, 'configs', 'resnet56.py')
  code = ('import sys; from superconv import programs; '
          f'c = programs.load_config({path!r}, "tiny"); print(c.model.name)')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == 'resnet8'
