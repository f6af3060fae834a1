"""ResNet-56 on CIFAR-10, CLR step sizes: Smith & Topin 2017 (arXiv:1708.07120), Fig. 1b.

One CLR cycle 0.1 -> 3.0 -> 0.1 with step size SS, 2 x SS updates at batch 1,000, otherwise as
`resnet56.py` (digest §2.1). `stepsize=1000|3000|5000|10000` (Fig. 1b; also 2000, 4000, 7500
of x.sh TAB1b). `bn=fig1b` (default): BN MAF 0.95 for every SS (x.sh FIG1b); `bn=tab1b`:
x.sh TAB1b's MAF 0.97 / 0.96 / 0.93 / 0.90 / 0.85 / 0.80 for SS 10k / 7.5k / 4k / 3k / 2k / 1k
(5k, not in TAB1b, keeps 0.95). Which set produced the paper's numbers is UNCONFIRMED.

Paper (final accuracy over 2,000 -> 20,000 iterations, digest §2.1): SS 1k 89.7 %, 3k 92.1 %,
5k 92.4 % (log 92.44 %), 10k 92.7 %. No authors' logs for 1k, 3k, 10k.

Arguments: `stepsize=N`, `bn=fig1b|tab1b`, `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/resnet56_stepsize.py --args stepsize=3000 --seeds 0 1

Hardware and time: 2 x SS x 1,000 images; 2017 8 GTX TITAN Black ~0.6 h per 1k of SS
(6.0 h for SS 5k). This 2-core CPU at 20-40 img/s: 14-28 h per 1k of SS.
"""

from configs import common
from configs import default
from superconv import config_lib

TAB1B_MAF = {10_000: 0.97, 7500: 0.96, 5000: 0.95, 4000: 0.93, 3000: 0.90, 2000: 0.85,
             1000: 0.80}
VARIANTS = ('', 'stepsize=1000', 'stepsize=3000', 'stepsize=5000', 'stepsize=10000',
            'stepsize=1000,bn=tab1b', 'stepsize=10000,bn=tab1b')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('stepsize', 'bn'))
  step_size = common.choice(args, 'stepsize', tuple(sorted(TAB1B_MAF)), 1000)
  bn = common.choice(args, 'bn', ('fig1b', 'tab1b'), 'fig1b')
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet56', bn_momentum=0.95)
  common.clr(c, 0.1, 3.0, step_size=step_size)
  c.model.bn_momentum = 0.95 if bn == 'fig1b' else TAB1B_MAF[step_size]
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
