"""ResNet-110 on CIFAR-10, PC-LR vs CLR: Smith & Topin 2017 (arXiv:1708.07120), Fig. 4b.

The authors' Caffe ResNet-110 (18 blocks per stage, digest §5.4), batch **800** (x.sh uses
100 x 8 GPUs for ResNet-110), momentum 0.9, weight decay 1e-4. `policy=clr` (default): CLR
0.1 -> 3.0 -> 0.1, SS 5,000, 10,000 updates, BN MAF 0.95 (x.sh FIG6b and the log; the README
says SS 10k); `policy=pclr`: 0.35 x0.1 at 50k/70k, 80,000 updates, MAF 0.999;
`policy=lr_range`: LR 0 -> 2 over 80,000 updates, MAF 0.95 (x.sh FIG4b).

Paper (v3 per [KOB]): PC-LR 91.0 %, CLR 92.1 %. Authors' logs: `lr35Res110Fig6b` final 91.21 %
(best 91.22 % @ 79,600), `clr3SS5kRes110Tab1` 92.37 %; `range2Res110Fig4b` 71.38 % at LR 2,
peak 87.31 % (digest §2.3, §6, §8.2).

Arguments: `policy=clr|pclr|lr_range`, `bn_groups=G` (default 8: BN groups of 100 as the 8
GPUs; `bn_groups=0`: BN over each device's whole batch), `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/resnet110.py --args policy=clr --seeds 0

Hardware and time: 2017 8 GTX TITAN Black: to be measured (about 2x ResNet-56 per image).
This 2-core CPU: ~10-20 img/s (to be measured), so 5-9 days for the 8 M images of CLR.
"""

from configs import common
from configs import default
from superconv import config_lib

VARIANTS = ('', 'policy=clr', 'policy=pclr', 'policy=lr_range', 'bn_groups=0')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy', 'bn_groups'))
  policy = common.choice(args, 'policy', ('clr', 'pclr', 'lr_range'), 'clr')
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet110', bn_momentum=0.95)
  c.batch_size = 800
  common.clr_pclr_or_range(c, policy)
  common.bn_groups(c, args)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
