"""The persistent compilation cache is on by default for the programs, and off with one field."""

from __future__ import annotations

import os

import pytest

from benchmarks import compile_cache
from configs import default
from superconv import programs


@pytest.mark.integration  # the program in a subprocess (benchmarks.compile_cache launches it)
def test_a_run_fills_the_cache_folder_it_is_given(tmp_path):
  cache = tmp_path / 'cache'
  row = compile_cache._run('configs/resnet56.py:tiny', str(tmp_path / 'run'), str(cache))
  assert row['compile_seconds'] > 0
  assert os.listdir(cache)  # the train step (and the eval step) compiled for over 1 s


def test_default_folder_and_the_environment_wins(monkeypatch, tmp_path):
  assert default.get_config().compilation_cache_dir == '~/.cache/superconv/jax'
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'env'))
  assert programs.use_compilation_cache('~/elsewhere') == str(tmp_path / 'env')
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  assert programs.use_compilation_cache('') == ''
