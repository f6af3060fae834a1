r"""The CPU forensics tables of docs/performance.md, regenerated from this study's results.

  python -m research.cpu_perf.tables            # print them
  python -m research.cpu_perf.tables --write    # rewrite their blocks in docs/performance.md

Each table is a generated block (`experiments.collect.write_block`) and comes from one file of
`results/` beside this module (the command that made it is in the file):

  perf-convs      convs_cpu.json        python -m research.cpu_perf.convs
  perf-breakdown  breakdown_cpu.json    python -m research.cpu_perf.convs --breakdown
  perf-scan       scan_unroll_cpu.json  python -m research.cpu_perf.convs --scan
  perf-unroll     cpu_unroll_cpu.json   python -m research.cpu_perf.cpu_unroll --ks 1 4 8 ...
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from experiments import collect
from research.cpu_perf import cpu_unroll

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, 'results')
ROOT = os.path.dirname(os.path.dirname(HERE))
DOC = os.path.join(collect.DOCS, 'performance.md')
# The modules' names when the committed results were made (the options are unchanged).
_MOVED = (('python -m benchmarks.throughput --convs', 'python -m research.cpu_perf.convs'),
          ('python -m benchmarks.', 'python -m research.cpu_perf.'))


def command(recorded: str) -> str:
  """A results file's command, under today's module name."""
  for old, new in _MOVED:
    recorded = recorded.replace(old, new)
  return recorded.strip()


def _load(name: str) -> dict:
  with open(os.path.join(RESULTS, name)) as f:
    return json.load(f)


def _source(d: dict, name: str) -> str:
  load = d.get('uptime_before', '').split('load average:')[-1].strip()
  path = os.path.relpath(os.path.join(RESULTS, name), ROOT)
  return (f"\n`{path}`, `{command(d['command'])}`, on {d['hardware']['cpu']} "
          f"({d['hardware']['cores']} cores), load average {load} before.\n")


def blocks() -> dict[str, str]:
  convs, breakdown = _load('convs_cpu.json'), _load('breakdown_cpu.json')
  scan, unroll = _load('scan_unroll_cpu.json'), _load('cpu_unroll_cpu.json')
  unroll = {**unroll, 'command': command(unroll['command'])}
  return {
      'perf-convs': convs['table'].rstrip('\n') + '\n' + _source(convs, 'convs_cpu.json'),
      'perf-breakdown': breakdown['table'].rstrip('\n') + '\n' +
                        _source(breakdown, 'breakdown_cpu.json'),
      'perf-scan': scan['table'].rstrip('\n') + '\n' + _source(scan, 'scan_unroll_cpu.json'),
      'perf-unroll': cpu_unroll.markdown(unroll, os.path.join(RESULTS, 'cpu_unroll_cpu.json')),
  }


def main(argv: Sequence[str] | None = None) -> int:
  return collect.blocks_main('python -m research.cpu_perf.tables', __doc__.split('\n')[0], DOC,
                             blocks, argv)


if __name__ == '__main__':
  raise SystemExit(main())
