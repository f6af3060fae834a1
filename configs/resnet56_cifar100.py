"""ResNet-56 on CIFAR-100: Smith & Topin 2017 (arXiv:1708.07120) README Fig. 7; Smith 2018
(arXiv:1803.09820) Table 2 CIFAR-100 rows.

2017 rows (batch 1,000, momentum 0.9, WD 1e-4, digest §2.4): `policy=clr` (default) CLR 0.1 ->
3.0 -> 0.1, SS 5,000, 10,000 updates, BN MAF 0.95: log `clr3SS5kCifar100Fig8` 68.20 %;
`policy=pclr` 0.35 x0.1 at 50k/70k, 80,000 updates, MAF 0.999: log `lr35Cifar100Fig8` 59.27 %
(best 59.80 %); `policy=lr_range` LR 0 -> 3 over 20,000 updates: log 40.82 % at LR 3, peak
51.78 % at 2.325. Paper values UNCONFIRMED ([ES]: 59.8 vs 68.6).

2018 rows (`policy=1cycle,epochs=25|50|100`, digest §2.5, §7.5): TBS 512, Caffe 1cycle with
cyclical momentum 0.95 -> 0.85 (same SS), WD 1e-4, Nesterov, BN MAF 0.9 (c100Resnet56):
25 epochs 0.10-0.50 / SS 12 epochs: 65.4 +- 0.2 %; 50: 0.10-0.50 / 23: 66.4 +- 0.6 %;
100: 0.09-0.90 / 45: 69.0 +- 0.4 %. The step rows ("0.005/step") are not reproduced: their
schedule is UNCONFIRMED.

Arguments: `policy=clr|pclr|lr_range|1cycle`, `epochs=N` (1cycle), `smoke`, `data=PATH`,
`seed=N`.

  python -m experiments.run --config=configs/resnet56_cifar100.py --args policy=clr --seeds 0 1

Hardware and time: as `resnet56.py` (CLR ~6 h on 8 TITAN Black in 2017; 3-6 days on this
2-core CPU); 1cycle 25 epochs = 1.25 M images: 9-17 h on this CPU.
"""

from configs import common
from configs import default
from superconv import config_lib

ONE_CYCLE = {25: (0.1, 0.5, 12), 50: (0.1, 0.5, 23), 100: (0.09, 0.9, 45)}
VARIANTS = ('', 'policy=clr', 'policy=pclr', 'policy=lr_range', 'policy=1cycle,epochs=25',
            'policy=1cycle,epochs=50', 'policy=1cycle,epochs=100')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy', 'epochs'))
  policy = common.choice(args, 'policy', ('clr', 'pclr', 'lr_range', '1cycle'), 'clr')
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet56', bn_momentum=0.95)
  c.data.name = 'cifar100'
  if policy == 'clr':
    common.clr(c, 0.1, 3.0, step_size=5000)
  elif policy == 'pclr':
    common.pc_lr(c, 0.35)
  elif policy == 'lr_range':
    common.lr_range(c, max_lr=3.0, num_steps=20_000)
  else:
    epochs = common.choice(args, 'epochs', tuple(ONE_CYCLE), 25)
    base, peak, ss_epochs = ONE_CYCLE[epochs]
    c.batch_size = 512
    c.num_steps = common.epochs_to_steps(epochs, 50_000, 512)
    common.smith2018_one_cycle(c, base, peak, common.epochs_to_steps(ss_epochs, 50_000, 512),
                               0.95, 0.85)
    c.model.bn_momentum = 0.9
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
