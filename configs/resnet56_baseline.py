"""ResNet-56 on CIFAR-10, the PC-LR baseline of Smith & Topin 2017 (arXiv:1708.07120), Fig. 1a.

Caffe `multistep`: LR 0.35, x0.1 at 50,000 and 70,000 updates, 80,000 updates (1,600 epochs)
at batch 1,000, SGD momentum 0.9, weight decay 1e-4, BN moving average fraction 0.999 (the
prototxt as committed), otherwise as `resnet56.py` (digest §2.1, §3.6).
Paper: 91.2 % ("peak", after about 80,000 iterations); the authors' log `lr35Fig1a`: final
90.32 %, best 90.39 % at 72,100 (digest §8.1: the paper's number does not match the log).

Arguments: `smoke`, `bn_groups=G` (default 8: BN groups of 125 as the 8 GPUs; `bn_groups=0`:
BN over each device's whole batch), `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/resnet56_baseline.py --seeds 0

Hardware and time: 80 M training images; ~49.2 h on 8 GTX TITAN Black in 2017 (18.0 h of it
testing). This 2-core CPU at 20-40 img/s: 23-46 days (not feasible; a GPU run).
"""

from configs import common
from configs import default
from superconv import config_lib

VARIANTS = ('', 'bn_groups=0')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('bn_groups',))
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet56', bn_momentum=0.999)
  common.pc_lr(c, 0.35)
  common.bn_groups(c, args)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
