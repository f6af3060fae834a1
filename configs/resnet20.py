"""ResNet-20 on CIFAR-10, PC-LR vs CLR: Smith & Topin 2017 (arXiv:1708.07120), Fig. 4b.

The authors' Caffe ResNet-20 (3 blocks per stage, digest §5.4), batch 1,000, momentum 0.9,
weight decay 1e-4. `policy=clr` (default): CLR 0.1 -> 3.0 -> 0.1, SS 5,000, 10,000 updates, BN
MAF 0.95 (x.sh FIG6b and the log; the README says SS 10k, UNCONFIRMED which v3 used);
`policy=pclr`: 0.35 x0.1 at 50k/70k, 80,000 updates, MAF 0.999; `policy=lr_range`: LR 0 -> 2
over 80,000 updates, MAF 0.95 (x.sh FIG4b); `policy=1cycle`: ours, not a paper row: the
same 10,000 updates with Smith 2018's Caffe 1cycle for CIFAR ResNets (0.1 -> 1.0 over 4,500
updates, then down to 1e-4; cyclical momentum 0.95 -> 0.85, Nesterov; digest §3.3, §7.4), the
run `research/range_trust/run_cpu.sh` feeds a range test into on a subset.

Paper (v3 per [KOB]): PC-LR 88.6 %, CLR 90.4 %. Authors' logs: `lr35Res20Fig6b` final 88.64 %
(best 88.77 % @ 78,500), `clr3SS5kRes20Tab1` 90.42 %; `range2Res20Fig4b` 82.60 % at LR 2,
peak 84.63 % (digest §2.3, §6).

Arguments: `policy=clr|pclr|lr_range|1cycle`, `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/resnet20.py --args policy=clr --seeds 0 1 2

Hardware and time: 2017 8 GTX TITAN Black: to be measured (ResNet-56: 6 h CLR / 49 h PC-LR).
This 2-core CPU: ~3x ResNet-56's 20-40 img/s (to be measured), so ~1-2 days for CLR.
"""

from configs import common
from configs import default
from superconv import config_lib

VARIANTS = ('', 'policy=clr', 'policy=pclr', 'policy=lr_range', 'policy=1cycle')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy',))
  policy = common.choice(args, 'policy', ('clr', 'pclr', 'lr_range', '1cycle'), 'clr')
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet20', bn_momentum=0.95)
  if policy == '1cycle':
    common.smith2018_one_cycle(c, 0.1, 1.0, step_size=4500, max_momentum=0.95,
                               min_momentum=0.85)
    c.num_steps = 10_000
  else:
    common.clr_pclr_or_range(c, policy)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
