"""README.md is a front page whose numbers are the docs' generated ones, and every generated
docs block equals what its script gives from the committed results today."""

from __future__ import annotations

import glob
import os
import re

import pytest

from benchmarks import tables
from experiments import collect
from experiments import make_tables
from experiments.budget import study
from research.cpu_perf import tables as cpu_perf_tables
from research.range_trust import report as range_trust
from research.superconvergence_cpu import report as superconvergence

from conftest import ROOT

README = os.path.join(ROOT, 'README.md')
RESULTS_DOC = os.path.join(ROOT, 'docs', 'results.md')
PERF_DOC = os.path.join(ROOT, 'docs', 'performance.md')
RESULTS = os.path.join(ROOT, 'experiments', 'results')

# README headline row (its first cell) -> the row of docs/results.md's generated table it quotes.
HEADLINE = {
    '1708 Fig. 1a, ResNet-56, CLR 0.1–3, 10k updates (bf16)': 'fig1a_h200/clr_bf16',
    '1708 Fig. 4b, ResNet-20 CLR, 5k images, 500 updates': 'fig4b_cpu/clr_5k',
    '1708 Fig. 4b, ResNet-20 PC-LR, 5k images, 1k updates': 'fig4b_cpu/pclr_5k',
    '1708 Table 1 at CPU scale: ResNet-20, 2.5k images, one CLR cycle, 150 updates':
        'superconvergence_cpu/r20_s2500_clr',
    'the same, PC-LR over 600 updates': 'superconvergence_cpu/r20_s2500_pclr',
    '1803 LeNet 1cycle, 12 epochs (Fashion-MNIST; the paper\'s is MNIST)':
        'superconvergence_cpu/lenet_1cycle',
    '1803 LeNet `inv`, 24 epochs at batch 512 (Fashion-MNIST)':
        'superconvergence_cpu/lenet_inv_24ep',
}
OURS = re.compile(r'^(?P<mean>\d+\.\d+)(?: ± (?P<std>\d+\.\d+))? \(n=(?P<n>\d+)\)')


def _rows(markdown: str) -> list[list[str]]:
  """The cells of every table row that is not a header rule."""
  return [[c.strip() for c in line.strip().strip('|').split('|')]
          for line in markdown.splitlines()
          if line.startswith('|') and not re.fullmatch(r'[|\-: ]+', line.strip())]


def _headline() -> dict[str, dict[str, str]]:
  text = open(README).read()
  section = text.split('\n## Results\n', 1)[1].split('\n## ', 1)[0]
  head, *rows = _rows(section)
  return {r[0]: dict(zip(head, r)) for r in rows}


def test_readme_is_a_front_page():
  text = open(README, encoding='utf-8').read()
  lines = text.splitlines()
  assert len(lines) <= 200 and len(text.encode()) <= 14_000, (len(lines), len(text.encode()))
  assert max(map(len, lines)) <= 200
  assert '<!--' not in text, 'README.md is written by hand: generated blocks live in docs/'
  assert 'shared' not in text and '<owner>' not in text


def test_no_docs_page_names_the_development_layout():
  for path in glob.glob(os.path.join(ROOT, 'docs', '*.md')):
    assert '../shared' not in open(path).read(), path


def test_readme_numbers_are_the_generated_tables():
  headline = _headline()
  assert set(headline) == set(HEADLINE), 'each README row quotes one docs row (HEADLINE)'
  head, *rows = _rows(collect.read_block(RESULTS_DOC, 'results'))
  docs = {r[0].strip('`'): dict(zip(head, r)) for r in rows}
  for label, row in headline.items():
    d = docs[HEADLINE[label]]
    assert row['config'].strip('`') == d['config'].strip('`').replace(':', '.py:', 1), label
    paper, log, ours = d['paper value'], d["authors' log"], d['ours (mean ± std)']
    assert row['paper'] == paper, label
    assert log.startswith(row['log']), label
    want, got = OURS.match(ours), OURS.match(row['ours'])
    assert want and got, (label, ours, row['ours'])
    assert (got['mean'], got['n']) == (want['mean'], want['n']), label
    assert got['std'] in (None, want['std']), label
    assert got['std'] is not None or want['n'] == '1', f'{label}: n > 1 needs its std'


def test_results_blocks_are_regenerated_from_the_results(tmp_path):
  results = collect.committed_results(str(tmp_path)) or RESULTS
  text = make_tables.markdown(collect.load_groups(results))
  assert collect.read_block(RESULTS_DOC, 'results') == text, (
      'docs/results.md is behind the results: python -m experiments.make_tables --write '
      '--committed')
  assert collect.read_block(RESULTS_DOC, 'range-trust') == range_trust.markdown(
      range_trust.report(results)), 'python -m research.range_trust.report --write'
  report = superconvergence.report(results, draw=False)
  report['figures'] = {  # where they lie in the repository, not in the checkout under tmp_path
      k: 'experiments/' + os.path.relpath(os.path.join(superconvergence.REPO, v),
                                          os.path.dirname(results))
      for k, v in report['figures'].items()}
  assert collect.read_block(RESULTS_DOC, 'superconvergence') == superconvergence.markdown(
      report), 'python -m research.superconvergence_cpu.report --write'


def test_performance_tables_are_regenerated_from_the_results():
  blocks = {**tables.blocks(), **cpu_perf_tables.blocks()}
  assert len(blocks) == 7
  for name, text in blocks.items():
    assert collect.read_block(PERF_DOC, name) == text, (
        f'{name}: python -m benchmarks.tables --write; python -m research.cpu_perf.tables --write')


def test_write_block_replaces_one_block_and_refuses_the_readme(tmp_path):
  page = tmp_path / 'page.md'
  page.write_text('# t\n<!-- begin a -->\nold\n<!-- end a -->\n<!-- begin b -->\nb\n'
                  '<!-- end b -->\n')
  collect.write_block(str(page), 'a', 'new')
  assert page.read_text() == ('# t\n<!-- begin a -->\nnew\n<!-- end a -->\n<!-- begin b -->\nb\n'
                              '<!-- end b -->\n')
  assert collect.read_block(str(page), 'b') == 'b\n'
  with pytest.raises(ValueError, match='no <!-- begin c -->'):
    collect.write_block(str(page), 'c', 'x')
  readme = tmp_path / 'README.md'
  readme.write_text('<!-- begin a -->\n<!-- end a -->\n')
  with pytest.raises(ValueError, match='by hand'):
    collect.write_block(str(readme), 'a', 'x')


def test_cpu_table_states_the_eager_goal_from_the_figures():
  def record(jax_ips, eager):
    return {'model': 'lenet', 'batch': 8, 'host_cpu': 'a CPU', 'jax': '0', 'command': 'cmd',
            'runs': [{'framework': 'jax (superconv train step)', 'images_per_sec': jax_ips},
                     {'framework': 'torch eager', 'images_per_sec': eager, 'torch': '2'}]}
  assert '**0.60x**' in tables.cpu_table([record(60.0, 100.0)])
  assert 'is **met**' in tables.cpu_table([record(60.0, 100.0)])
  assert 'is **not met**' in tables.cpu_table([record(60.0, 100.0), record(40.0, 100.0)])


def test_every_relative_link_of_the_docs_resolves():
  pages = ([README, os.path.join(ROOT, 'experiments', 'README.md')]
           + glob.glob(os.path.join(ROOT, 'docs', '*.md'))
           + glob.glob(os.path.join(ROOT, 'research', '**', 'README.md'), recursive=True))
  broken = []
  for page in pages:
    for link in re.findall(r'\]\(([^)#\s]+)', open(page).read()):
      if not link.startswith(('http://', 'https://')) and not os.path.exists(
          os.path.join(os.path.dirname(page), link)):
        broken.append(f'{os.path.relpath(page, ROOT)}: {link}')
  assert not broken, broken


def test_readme_baseline_figures_are_the_baselines_report():
  readme = open(README, encoding='utf-8').read()
  section = readme[readme.index("## Against 2026's schedules"):]
  report = open(os.path.join(ROOT, 'docs', 'baselines.md'), encoding='utf-8').read()
  figures = re.findall(r'\d+\.\d+ ± \d+\.\d+|p = [\d.]+', section)
  assert len(figures) >= 3, section
  for figure in figures:
    assert figure in report, f'README quotes {figure!r}, which docs/baselines.md does not state'


def test_baselines_blocks_are_the_committed_study_results(tmp_path):
  """Each protocol block of docs/baselines.md is `study report`'s text from the committed runs,
  and every protocol with committed runs has its block."""
  results = collect.committed_results(str(tmp_path)) or RESULTS
  doc = os.path.join(ROOT, 'docs', 'baselines.md')
  reported = 0
  for name in study.PROTOCOLS:
    if not os.path.isdir(os.path.join(results, name)):
      continue
    data = study.collect_protocol(name, root=results)
    assert collect.read_block(doc, f'budget_{name}') == study.report_block(data), (
        f'docs/baselines.md is behind {name}: python -m experiments.budget.study report {name}')
    reported += 1
  assert reported >= 1
