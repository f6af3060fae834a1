"""superconv.xla_flags: the CPU default flag is merged with the user's XLA_FLAGS, gated and opt-out."""

import os
import subprocess
import sys

import pytest

from superconv import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OK = '0.10.2'


def test_added_when_unset():
  env = {}
  assert xla_flags.apply_cpu_defaults(env, OK) == [xla_flags.YNN_OFF]
  assert env['XLA_FLAGS'] == xla_flags.YNN_OFF


def test_merged_with_user_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8 '}
  xla_flags.apply_cpu_defaults(env, OK)
  assert env['XLA_FLAGS'] == '--xla_force_host_platform_device_count=8 ' + xla_flags.YNN_OFF


@pytest.mark.parametrize('user', ['--xla_cpu_experimental_ynn_fusion_type=+individual_convolution',
                                  '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',
                                  '--xla_cpu_experimental_ynn_fusion_type=individual_dot',
                                  '--a=1 --xla_cpu_experimental_ynn_fusion_type= --b=2'])
def test_user_setting_wins(user):
  env = {'XLA_FLAGS': user}
  assert xla_flags.apply_cpu_defaults(env, OK) == []
  assert env['XLA_FLAGS'] == user


def test_similar_flag_names_are_not_the_flag():
  env = {'XLA_FLAGS': '--xla_cpu_experimental_xnn_fusion_type=+dot'}
  assert xla_flags.apply_cpu_defaults(env, OK) == [xla_flags.YNN_OFF]


@pytest.mark.parametrize('value', ['0', 'false', 'off', 'No'])
def test_opt_out(value):
  env = {xla_flags.OPT_OUT_VAR: value, 'XLA_FLAGS': '--x=1'}
  assert xla_flags.apply_cpu_defaults(env, OK) == []
  assert env == {xla_flags.OPT_OUT_VAR: value, 'XLA_FLAGS': '--x=1'}


@pytest.mark.parametrize('version,known', [('0.10.2', True), ('0.10.0', True), ('0.10.9.dev1', True),
                                           ('0.9.2', False), ('0.11.2', False), ('0.4.30', False),
                                           (None, False), ('', False)])
def test_version_gate(version, known):
  assert xla_flags.flag_known(version) is known
  if version is not None:  # None means "read the installed jaxlib" in apply_cpu_defaults
    env = {}
    xla_flags.apply_cpu_defaults(env, version)
    assert ('XLA_FLAGS' in env) is known


def test_installed_jaxlib_is_read():
  assert xla_flags.jaxlib_version() is not None
  assert xla_flags.cpu_defaults({}) == (
      [xla_flags.YNN_OFF] if xla_flags.flag_known(xla_flags.jaxlib_version()) else [])


def test_jax_accepts_the_merged_flags():
  """In a fresh process: the flags are applied before JAX starts, XLA accepts them, a conv runs."""
  code = ('from superconv import xla_flags; added = xla_flags.apply_cpu_defaults()\n'
          'import os, jax, jax.numpy as jnp\n'
          'x = jnp.ones((2, 8, 8, 3)); w = jnp.ones((3, 3, 3, 4))\n'
          'y = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",'
          ' dimension_numbers=("NHWC", "HWIO", "NHWC")))(x, w)\n'
          'assert float(y[0, 4, 4, 0]) == 27.0\n'
          'print(added, os.environ.get("XLA_FLAGS"))\n')
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', xla_flags.OPT_OUT_VAR)}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_cpu_enable_fast_math=false')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=120, check=True).stdout
  assert '--xla_cpu_enable_fast_math=false' in out
  if xla_flags.flag_known(xla_flags.jaxlib_version()):
    assert xla_flags.YNN_OFF in out


@pytest.mark.skipif(not xla_flags.flag_known(xla_flags.jaxlib_version()),
                    reason='the installed jaxlib is outside the known range')
def test_known_range_matches_the_library():
  assert xla_flags.flag_in_jaxlib()
  assert not xla_flags.flag_in_jaxlib('--xla_cpu_no_such_flag_superconv')
