"""ResNet-56 on CIFAR-10, super-convergence: Smith & Topin 2017 (arXiv:1708.07120), Fig. 1a.

One CLR cycle 0.1 -> 3.0 -> 0.1 (Caffe `triangular`, step size 5,000), 10,000 iterations at batch
1,000 (the paper's 8 GPUs x 125), SGD momentum 0.9 (Caffe form), weight decay 1e-4, BN moving
average fraction 0.95, the authors' Caffe ResNet-56 (digest §5.4), raw pixels minus the mean
image, random mirror, no crop padding (digest §2.1, §5.1).

Paper: 92.4 % test accuracy; the authors' own log: final 92.44 %, best 92.49 % at 9,800.

Arguments (after the colon): `smoke` (tiny, offline, < 1 min on 2 CPU cores); `bn_groups=8` splits
each device's batch into BN groups of batch/8 = 125 like the paper's 8 GPUs;
`data=PATH` reads local files instead of TFDS, e.g. `data=../shared/data/cifar10-jpeg.tar.gz`;
`policy=1cycle` uses the Smith 2018 1cycle shape (0.3 -> 3.0 with cyclical momentum) instead.

  python -m superconv.main --config=configs/resnet56.py --workdir=/tmp/resnet56
  python -m superconv.main --config=configs/resnet56.py:data=../shared/data/cifar10-jpeg.tar.gz \
      --workdir=/tmp/resnet56

Hardware and time: 10 M training images; ~6 h on 8 GTX TITAN Black in 2017. See README for what
superconv measured.
"""

from configs import default
from superconv import config_lib


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  c = default.get_config()
  c.model.name = 'resnet56'
  c.model.bn_momentum = 0.95
  c.optimizer.bias_lr_mult = 2.0  # prototxt: conv biases lr_mult 2, decay_mult 0
  if args.get('bn_groups'):
    c.model.virtual_batch_size = c.batch_size // int(args['bn_groups'])
  if args.get('data'):
    c.data.source, c.data.path = 'files', str(args['data'])
  if args.get('policy') == '1cycle':
    c.schedule.name = 'one_cycle'
    c.schedule.max_lr = 3.0
    c.momentum_schedule.name = 'one_cycle'
  return config_lib.finalize(c, arg)
