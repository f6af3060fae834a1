r"""Every config file x variant (and its `smoke` / `tiny` form) as the run it resolves to, as JSON.

  python -m experiments.dump_configs > /tmp/before.json   # before a config refactor
  python -m experiments.dump_configs > /tmp/after.json    # after it
  diff <(python -m json.tool /tmp/before.json) <(python -m json.tool /tmp/after.json)

The dump is the *effective* run: the resolved config with its references followed, reduced to the
fields a run reads. A refactor that moves or renames fields without changing any run leaves it
unchanged. The reduction is written out here on purpose, independently of the code it checks:
  * the LR schedule keeps only the arguments its factory reads (`_READS` below), plus `length`
    for the CLR's cycles, and the momentum schedule only its own;
  * a range test's schedule is its sweep (`lr_range.*`);
  * `model.num_classes` is dropped: the trainer takes the class count from the dataset.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_CONFIGS = ('__init__', 'common')

# The LR schedule arguments each schedule reads (besides num_steps).
_READS = {
    'triangular': ('base_lr', 'max_lr', 'step_size', 'mode', 'gamma', 'num_cycles'),
    'one_cycle': ('max_lr', 'pct_start', 'div_factor', 'final_div_factor', 'three_phase',
                  'anneal'),
    'caffe_one_cycle': ('base_lr', 'max_lr', 'step_size', 'floor_div'),
    'multistep': ('base_lr', 'boundaries', 'gamma'),
    'step': ('base_lr', 'step_size', 'gamma'),
    'inv': ('base_lr', 'gamma', 'power'),
    'constant': ('base_lr',),
    'lr_range': (),
    'warmup_cosine': ('max_lr', 'warmup_steps'),
}


def _load(stem: str):
  path = os.path.join(ROOT, 'configs', f'{stem}.py')
  spec = importlib.util.spec_from_file_location(f'_dump_config_{stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def cases():
  """(stem, argument) for every config file, each documented variant, and its shrunk forms."""
  stems = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                 if os.path.basename(p)[:-3] not in NOT_CONFIGS)
  out = set()
  for stem in stems:
    for variant in ('',) + tuple(getattr(_load(stem), 'VARIANTS', ())):
      out.add((stem, variant))
      for shrunk in ('smoke', 'tiny'):
        out.add((stem, ','.join(filter(None, (variant, shrunk)))))
  return sorted(out)


def _plain(x):
  if isinstance(x, dict):
    return {k: _plain(v) for k, v in sorted(x.items())}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x


def effective(config) -> dict:
  """The fields of a (resolved) config that decide its run; see the module docstring."""
  d = _plain(config.to_dict())
  sched = d.pop('schedule')
  name = sched['name']
  if d.get('mode') == 'lr_range':
    name = 'lr_range'
  kept = {k: sched[k] for k in _READS[name] if k in sched}
  mom = d.pop('momentum_schedule')
  mname = mom['name']
  if mname == 'constant':
    mkept = {'value': mom['value']}
  else:
    mkept = {k: mom[k] for k in ('min_momentum', 'max_momentum')}
    if mname == 'one_cycle':  # reads the LR 1cycle's phases
      mkept.update({k: sched.get(k) for k in ('pct_start', 'three_phase', 'anneal')})
    if mname == 'cyclical':
      mkept['step_size'] = mom.get('step_size') or sched.get('step_size')
  d['schedule'] = {'name': name, **kept}
  d['momentum_schedule'] = {'name': mname, **mkept}
  d.get('model', {}).pop('num_classes', None)
  return d


def dump() -> dict:
  out = {}
  for stem, arg in cases():
    config = _load(stem).get_config(arg)
    out[f'{stem}:{arg}'] = effective(config.copy_and_resolve_references())
  return out


def main() -> int:
  json.dump(dump(), sys.stdout, indent=1, sort_keys=True)
  sys.stdout.write('\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
