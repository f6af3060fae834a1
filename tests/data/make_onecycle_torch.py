"""Regenerates tests/data/onecycle_torch.json: torch OneCycleLR learning rates and momenta.

  python tests/data/make_onecycle_torch.py

Needs torch (CPU is enough). tests/test_schedules.py compares superconv.schedules.one_cycle and
one_cycle_momentum against the committed JSON, so the tests themselves need no torch.
Entry `lr[k]` / `momentum[k]` is what OneCycleLR sets for update k (0-based), k < total_steps.
"""

import json
import pathlib

import torch

# Our defaults, torch's defaults, fractional phase boundaries, two-phase linear, a longer run.
CASES = [
    dict(total_steps=200, max_lr=1.0, pct_start=0.45, div_factor=10.0, final_div_factor=1000.0,
         three_phase=True, anneal='linear', base_momentum=0.85, max_momentum=0.95),
    dict(total_steps=157, max_lr=0.5, pct_start=0.3, div_factor=25.0, final_div_factor=1e4,
         three_phase=False, anneal='cos', base_momentum=0.85, max_momentum=0.95),
    dict(total_steps=123, max_lr=3.0, pct_start=0.37, div_factor=10.0, final_div_factor=1000.0,
         three_phase=True, anneal='cos', base_momentum=0.8, max_momentum=0.95),
    dict(total_steps=97, max_lr=0.02, pct_start=0.25, div_factor=20.0, final_div_factor=100.0,
         three_phase=False, anneal='linear', base_momentum=0.9, max_momentum=0.99),
    dict(total_steps=2000, max_lr=1.2, pct_start=0.4567, div_factor=12.0,
         final_div_factor=1000.0, three_phase=True, anneal='linear', base_momentum=0.85,
         max_momentum=0.95),
]


def run(case):
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
  sched = torch.optim.lr_scheduler.OneCycleLR(
      opt, max_lr=case['max_lr'], total_steps=case['total_steps'],
      pct_start=case['pct_start'], anneal_strategy=case['anneal'], cycle_momentum=True,
      base_momentum=case['base_momentum'], max_momentum=case['max_momentum'],
      div_factor=case['div_factor'], final_div_factor=case['final_div_factor'],
      three_phase=case['three_phase'])
  lrs, moms = [], []
  for _ in range(case['total_steps']):
    lrs.append(opt.param_groups[0]['lr'])
    moms.append(opt.param_groups[0]['momentum'])
    opt.step()
    sched.step()
  return dict(args=case, lr=lrs, momentum=moms)


def main():
  out = dict(torch_version=torch.__version__, cases=[run(c) for c in CASES])
  path = pathlib.Path(__file__).with_name('onecycle_torch.json')
  path.write_text(json.dumps(out, separators=(',', ':')) + '\n')
  print(f'wrote {path} ({path.stat().st_size} bytes)')


if __name__ == '__main__':
  main()
