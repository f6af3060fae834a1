"""ResNet-56 on CIFAR-10, regularization sweeps with CLR: Smith & Topin 2017 (arXiv:1708.07120)
README Fig. 9a/9b, 10a/10b (x.sh FIG10a/b, FIG11a/b), digest §2.4.

CLR 0.1 -> 3.0 -> 0.1, SS 5,000, 10,000 updates, batch 1,000, momentum 0.9, weight decay 1e-4,
BN MAF 0.95, changing one thing, `sweep=...,value=...`:
  momentum  0.95 / 0.90 / 0.85 / 0.80: logs 90.74 / 92.44 / 92.29 / 91.86 % (final).
  wd        1e-3 / 1e-4 / 1e-5 / 1e-6: logs 9.95 (collapses; best 65.87 % @ 800) / 92.44 /
            88.28 / 87.25 %.
  batch     256 / 512 / 1000 / 1536 (all 10,000 updates): no logs; [ES] 89.5 / 91.7 / 92.4 /
            92.1 % UNCONFIRMED.
  dropout   0.2 after every BN (Resnet56Dropout): only a range test is logged
            (`sweep=dropout,value=0.2,lr_range`: 0 -> 3 over 20,000 updates, 77.87 % at LR 3,
            peak 86.33 % at LR 0.705); the CLR run has no log.
Paper values: UNCONFIRMED except that WD 1e-3 makes LRs near 3 untrainable (1803.09820 Fig. 5b).

Arguments: `sweep=momentum|wd|batch|dropout`, `value=X` (default: the Fig. 1a value, the
centre of every sweep, which is the `resnet56.py` run),
`lr_range` (range test instead of CLR), `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/resnet56_regularization.py \
      --args "sweep=wd,value=1e-5" --seeds 0

Hardware and time: as `resnet56.py`, ~6 h on 8 TITAN Black in 2017; 3-6 days on this 2-core
CPU (batch 1536: x1.5, batch 256: x0.26).
"""

from configs import common
from configs import default
from superconv import config_lib

SWEEPS = {'momentum': (0.9, (0.95, 0.9, 0.85, 0.8)), 'wd': (1e-4, (1e-3, 1e-4, 1e-5, 1e-6)),
          'batch': (1000, (256, 512, 1000, 1536)), 'dropout': (0.0, (0.0, 0.2))}
# The centre of every sweep is the Fig. 1a run; it is listed once (momentum 0.9).
VARIANTS = tuple(f'sweep={s},value={v}' for s, (centre, vs) in SWEEPS.items() for v in vs
                 if v != centre or s == 'momentum') + ('sweep=dropout,value=0.2,lr_range',)


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('sweep', 'value', 'lr_range'))
  sweep = common.choice(args, 'sweep', tuple(SWEEPS), 'momentum')
  default_value, values = SWEEPS[sweep]
  value = common.choice(args, 'value', values, default_value)
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet56', bn_momentum=0.95)
  if args.get('lr_range'):
    common.lr_range(c, max_lr=3.0, num_steps=20_000)
  else:
    common.clr(c, 0.1, 3.0, step_size=5000)
  if sweep == 'momentum':
    c.momentum_schedule.value = float(value)
  elif sweep == 'wd':
    c.optimizer.weight_decay = float(value)
  elif sweep == 'batch':
    c.batch_size = int(value)
  else:
    c.model.dropout_rate = float(value)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
