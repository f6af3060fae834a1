"""superconv.platform: the CPU flag (merged with the user's XLA_FLAGS, gated, opt-out, and what it
changes in the compiled program) and the per-backend dispatch choices."""

import os
import subprocess
import sys

import jax
import ml_collections
import pytest

from benchmarks import xla_flag
from superconv import platform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK = '0.10.2'


def test_added_when_unset():
  env = {}
  assert platform.apply_cpu_defaults(env, OK) == [platform.YNN_OFF]
  assert env['XLA_FLAGS'] == platform.YNN_OFF


def test_merged_with_user_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8 '}
  platform.apply_cpu_defaults(env, OK)
  assert env['XLA_FLAGS'] == '--xla_force_host_platform_device_count=8 ' + platform.YNN_OFF


@pytest.mark.parametrize('user', ['--xla_cpu_experimental_ynn_fusion_type=+individual_convolution',
                                  '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',
                                  '--xla_cpu_experimental_ynn_fusion_type=individual_dot',
                                  '--a=1 --xla_cpu_experimental_ynn_fusion_type= --b=2'])
def test_user_setting_wins(user):
  env = {'XLA_FLAGS': user}
  assert platform.apply_cpu_defaults(env, OK) == []
  assert env['XLA_FLAGS'] == user


def test_similar_flag_names_are_not_the_flag():
  env = {'XLA_FLAGS': '--xla_cpu_experimental_xnn_fusion_type=+dot'}
  assert platform.apply_cpu_defaults(env, OK) == [platform.YNN_OFF]


@pytest.mark.parametrize('value', ['0', 'false', 'off', 'No'])
def test_opt_out(value):
  env = {platform.OPT_OUT_VAR: value, 'XLA_FLAGS': '--x=1'}
  assert platform.apply_cpu_defaults(env, OK) == []
  assert env == {platform.OPT_OUT_VAR: value, 'XLA_FLAGS': '--x=1'}


@pytest.mark.parametrize('version,known', [
    ('0.10.2', True), ('0.10.0', True), ('0.10.9.dev1', True), ('0.11.2', True),
    ('0.12.0.1', True), ('0.9.2', False), ('0.13.0', False), ('0.4.30', False), (None, False),
    ('', False)])
def test_version_gate(version, known):
  assert platform.flag_known(version) is known
  if version is not None:  # None means "read the installed jaxlib" in apply_cpu_defaults
    env = {}
    platform.apply_cpu_defaults(env, version)
    assert ('XLA_FLAGS' in env) is known


def test_installed_jaxlib_is_read():
  assert platform.jaxlib_version() is not None
  assert platform.cpu_defaults({}) == (
      [platform.YNN_OFF] if platform.flag_known(platform.jaxlib_version()) else [])


def test_jax_accepts_the_merged_flags():
  """In a fresh process: the flags are applied before JAX starts, XLA accepts them, a conv runs."""
  code = ('from superconv import platform; added = platform.apply_cpu_defaults()\n'
          'import os, jax, jax.numpy as jnp\n'
          'x = jnp.ones((2, 8, 8, 3)); w = jnp.ones((3, 3, 3, 4))\n'
          'y = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",'
          ' dimension_numbers=("NHWC", "HWIO", "NHWC")))(x, w)\n'
          'assert float(y[0, 4, 4, 0]) == 27.0\n'
          'print(added, os.environ.get("XLA_FLAGS"))\n')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', platform.OPT_OUT_VAR)}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_cpu_enable_fast_math=false')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=120, check=True).stdout
  assert '--xla_cpu_enable_fast_math=false' in out
  if platform.flag_known(platform.jaxlib_version()):
    assert platform.YNN_OFF in out


@pytest.mark.skipif(not platform.flag_known(platform.jaxlib_version()),
                    reason='the installed jaxlib is outside the known range')
def test_known_range_matches_the_library():
  assert platform.flag_in_jaxlib()
  assert not platform.flag_in_jaxlib('--xla_cpu_no_such_flag_superconv')


@pytest.mark.skipif(not platform.flag_known(platform.jaxlib_version()),
                    reason='the installed jaxlib is outside the known range')
def test_the_flag_takes_the_convolutions_out_of_ynn_fusions():
  assert xla_flag.ynn_fusions('') >= 1  # XLA's default: a convolution as a YNNPACK fusion
  assert xla_flag.ynn_fusions(platform.YNN_OFF) == 0


def test_command_prints_the_flags_for_scripts():
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', platform.OPT_OUT_VAR)}
  run = lambda *args, **extra: subprocess.run(
      [sys.executable, '-m', 'superconv.platform', *args], env=dict(env, PYTHONPATH=ROOT, **extra),
      capture_output=True, text=True, timeout=60)
  out = run('xla-flags')
  assert out.returncode == 0 and out.stdout.split() == platform.cpu_defaults({})
  assert run('xla-flags', **{platform.OPT_OUT_VAR: '0'}).stdout.split() == []
  assert run('other').returncode == 2


def _dispatch_config(num_steps, **fields):
  return ml_collections.ConfigDict(dict(
      num_steps=num_steps, steps_per_dispatch=10, cpu_steps_per_dispatch=4,
      cpu_unroll_min_steps=1000, **fields))


@pytest.mark.parametrize('backend,num_steps,expected', [
    ('cpu', 999, 1), ('cpu', 1000, 4), ('gpu', 8, 10), ('tpu', 10_000, 10)])
def test_steps_per_dispatch_by_backend(backend, num_steps, expected):
  assert platform.steps_per_dispatch(_dispatch_config(num_steps), backend) == expected


def test_per_backend_forms():
  assert platform.unrolls_updates('cpu') and not platform.unrolls_updates('gpu')
  assert not platform.packs_by_default('cpu') and platform.packs_by_default('tpu')
  assert platform.packs_by_default() is (jax.default_backend() != 'cpu')
