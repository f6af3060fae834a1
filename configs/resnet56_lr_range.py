"""ResNet-56 on CIFAR-10, LR range test: Smith & Topin 2017 (arXiv:1708.07120), Fig. 2b.

Mode 'lr_range': the LR rises linearly 0 -> 3 over `iters` updates (the authors' `triangular`
with base 0 and stepsize = max_iter), batch 1,000, SGD momentum 0.9, weight decay 1e-4, BN MAF
0.95, a test every 100 updates (digest §3.2). `iters=5000|20000|100000` (default 5000).
`max_lr=2,iters=80000` is the "show regularization" range test of x.sh FIG4a/4b.

Authors' logs (digest §6.1-6.2; a range test's "final" is the accuracy at the top LR):
5k `range3Iter5kFig2b` final 78.44 %, peak 81.56 % at LR 1.20; 20k: 78.55 %, peak 83.13 % at
1.545; 100k: 72.25 %, peak 86.49 % at 0.789; 0 -> 2 / 80k `range2SS80kRes56wd0`: 87.78 %,
peak 89.36 %. The paper reads the curve staying high up to LR 3 as the sign of super-convergence.

Arguments: `iters=N`, `max_lr=X`, `smoke`, `data=PATH`, `seed=N`.

  python -m superconv.main --config=configs/resnet56_lr_range.py:iters=20000 --workdir=/tmp/range

Hardware and time: iters x 1,000 images; 2017 8 GTX TITAN Black ~3 h for 5k (estimated from
the 10k CLR run). This 2-core CPU at 20-40 img/s: 1.5-3 days for 5k.
"""

from configs import common
from configs import default
from superconv import config_lib

VARIANTS = ('', 'iters=5000', 'iters=20000', 'iters=100000', 'max_lr=2,iters=80000')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('iters', 'max_lr'))
  iters = int(args.get('iters', 5000))
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet56', bn_momentum=0.95)
  common.lr_range(c, max_lr=float(args.get('max_lr', 3.0)), num_steps=iters)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
