"""ResNet-56 on CIFAR-10, super-convergence: Smith & Topin 2017 (arXiv:1708.07120), Fig. 1a.

`policy=clr` (default): one CLR cycle 0.1 -> 3.0 -> 0.1 (Caffe `triangular`, step size 5,000),
10,000 iterations at batch 1,000 (the paper's 8 GPUs x 125), SGD momentum 0.9 (Caffe form),
weight decay 1e-4, BN moving average fraction 0.95, the authors' Caffe ResNet-56 (digest §5.4),
raw pixels minus the mean image, random mirror, no crop padding (digest §2.1, §5.1).
Paper: 92.4 %; the authors' log `clr3SS5kFig1a`: final 92.44 %, best 92.49 % at 9,800.

`policy=1cycle`: ours, not a paper row: the same 10,000 updates with the PyTorch-style 1cycle
(0.3 -> 3.0 -> 3e-4, three phases, momentum 0.95 -> 0.85 -> 0.95). The PC-LR curve of Fig. 1a
is `resnet56_baseline.py`.

Arguments (after the colon): `smoke` (tiny, offline, about a minute on 2 CPU cores);
`bn_groups=G` (default 8) normalises BN over G groups of the batch, batch/8 = 125 images like
the paper's 8 GPUs, and `bn_groups=0` over each device's whole batch (1,000 on one device);
`data=PATH` reads local files instead of TFDS; `seed=N`.

  python -m superconv.main --config=configs/resnet56.py --workdir=/tmp/resnet56
  python -m experiments.run --config=configs/resnet56.py \
      --args "data=PATH/cifar-10-python.tar.gz" --seeds 0 1 2

Hardware and time: 10 M training images; ~6.0 h on 8 GTX TITAN Black in 2017 (2.2 h of it
testing). This 2-core CPU at 20-40 img/s: 3-6 days. Ours: see README.
"""

from configs import common
from configs import default
from superconv import config_lib

VARIANTS = ('', 'policy=clr', 'policy=1cycle', 'bn_groups=0')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy', 'bn_groups'))
  policy = common.choice(args, 'policy', ('clr', '1cycle'), 'clr')
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet56', bn_momentum=0.95)
  common.clr(c, 0.1, 3.0, step_size=5000)
  if policy == '1cycle':
    common.set_schedule(c, 'one_cycle', max_lr=3.0, div_factor=10.0)
    c.momentum_schedule.name = 'one_cycle'
    c.momentum_schedule.max_momentum, c.momentum_schedule.min_momentum = 0.95, 0.85
  common.bn_groups(c, args)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
