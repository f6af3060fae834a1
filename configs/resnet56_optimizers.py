"""ResNet-56 on CIFAR-10 with other optimizers: Smith & Topin 2017 (arXiv:1708.07120) README
Fig. 8a/8b (Results "Fig9"), digest §2.4.

`policy=pclr` (default): the optimizer's LR x0.1 at 50k/70k, 80,000 updates, BN MAF 0.999;
`policy=clr`: CLR 10,000 updates, SS 5,000, MAF 0.95. Batch 1,000, weight decay 1e-4 (L2 in
the gradient, Caffe). `opt=`:
  nesterov  (default) SGD Nesterov momentum 0.9, LR 0.35 / CLR 0.1-3.
            Logs: PC-LR `lr35NestFig9` 90.33 % (best 90.48 %); CLR `clr3SS5kNestFig9` 92.47 %.
  adam      LR 0.0035, b1 0.9 (Caffe momentum), b2 0.999, eps 1e-8. Log PC-LR 87.15 %
            (best 90.72 % @ 74,300). CLR 0.001-0.03 is ours (the PC-LR ratio 1/100).
  adagrad   LR 0.35, no momentum, eps 1e-8. Log PC-LR 83.74 %. CLR 0.1-3 is ours.
  adadelta  LR 0.35, rho 0 (the `momentum` line removed in Caffe), eps 1e-8. Log PC-LR 70.97 %
            (best 71.63 %). CLR 0.1-3 is ours.
Paper values for these: UNCONFIRMED.

Arguments: `opt=nesterov|adam|adagrad|adadelta`, `policy=pclr|clr`, `smoke`, `data=PATH`,
`seed=N`.

  python -m experiments.run --config=configs/resnet56_optimizers.py \
      --args "opt=adam,policy=pclr" --seeds 0

Hardware and time: PC-LR as `resnet56_baseline.py` (~49 h on 8 TITAN Black), CLR as
`resnet56.py` (~6 h); this 2-core CPU: 3-6 days per 10,000 updates.
"""

from configs import common
from configs import default
from superconv import config_lib

OPTS = ('nesterov', 'adam', 'adagrad', 'adadelta')
VARIANTS = tuple(f'opt={o},policy={p}' for o in OPTS for p in ('pclr', 'clr'))


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('opt', 'policy'))
  opt = common.choice(args, 'opt', OPTS, 'nesterov')
  policy = common.choice(args, 'policy', ('pclr', 'clr'), 'pclr')
  scale = 0.01 if opt == 'adam' else 1.0  # Adam's 0.0035 is 1/100 of SGD's 0.35
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet56', bn_momentum=0.95)
  if policy == 'pclr':
    common.pc_lr(c, 0.35 * scale)
  else:
    common.clr(c, 0.1 * scale, 3.0 * scale, step_size=5000)
  c.optimizer.name = 'sgd' if opt == 'nesterov' else opt
  c.optimizer.nesterov = opt == 'nesterov'
  c.optimizer.eps, c.optimizer.b2, c.optimizer.rho = 1e-8, 0.999, 0.0
  # Momentum (Adam: b1) 0.9 for SGD and Adam; AdaGrad and AdaDelta have none.
  c.momentum_schedule.value = 0.9 if opt in ('nesterov', 'adam') else 0.0
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
