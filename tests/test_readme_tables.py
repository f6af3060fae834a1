"""The README's generated tables equal what their committed results files give today."""

from __future__ import annotations

import json
import os

from benchmarks import compile_cache
from benchmarks import readme

from conftest import ROOT

README = os.path.join(ROOT, 'README.md')


def _block(text: str, name: str) -> str:
  return text.split(f'<!-- {name}:start -->\n', 1)[1].split(f'<!-- {name}:end -->', 1)[0]


def test_performance_tables_are_regenerated_from_the_results():
  text = open(README).read()
  assert readme.replace_blocks(text, readme.blocks()) == text


def test_compilation_cache_table_is_the_results_file():
  path = os.path.join(ROOT, 'benchmarks', 'results', 'compile_cache_cpu.json')
  text = open(README).read()
  assert _block(text, 'compile-cache') == compile_cache.markdown(json.load(open(path)), path)


def test_cpu_table_states_the_eager_goal_from_the_figures():
  def record(jax_ips, eager):
    return {'model': 'lenet', 'batch': 8, 'host_cpu': 'a CPU', 'jax': '0', 'command': 'cmd',
            'runs': [{'framework': 'jax (superconv train step)', 'images_per_sec': jax_ips},
                     {'framework': 'torch eager', 'images_per_sec': eager, 'torch': '2'}]}
  assert '**0.60x**' in readme.cpu_table([record(60.0, 100.0)])
  assert 'is **met**' in readme.cpu_table([record(60.0, 100.0)])
  assert 'is **not met**' in readme.cpu_table([record(60.0, 100.0), record(40.0, 100.0)])
