"""ResNeXt-56 on CIFAR-10: Smith & Topin 2017 (arXiv:1708.07120) README Fig. 11b and the
Results "Fig12" range tests with gradient clipping, digest §2.4, §5.4.

The authors' `ResNeXt56`: the bottleneck ResNet-56 shape with group-32 3x3 convs, widths 32/64/
128 -> out 64/128/256; batch 680 (85 x 8 GPUs), momentum 0.9, weight decay 1e-4, BN MAF 0.95.
(Their prototxt also tests with batch statistics; we test with the running averages.)
`policy=lr_range` (default): LR 0 -> 3 over 20,000 updates, global gradient norm clipped at
`clip=2|5|10` (default 2). Logs (final = at the last logged LR; three runs stopped early):
clip 2 18.23 % (stopped at 16,100), peak 46.11 % at 2,900; clip 5 21.05 % (12,800), peak
46.22 % at 2,700; clip 10 (two runs) 17.34 % / 10.27 % (12,800), peaks 45.91 / 43.42 % at 2,700.
`policy=clr`: CLR 0.1 -> 3.0 -> 0.1, SS 5,000, 10,000 updates, `clip=0` by default (README
Fig. 11b; no log, paper value UNCONFIRMED).

Arguments: `policy=lr_range|clr`, `clip=N`, `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/resnext56.py --args clip=10 --seeds 0 1

Hardware and time: 13.6 M images (range test); 2017 8 TITAN Black: to be measured. This
2-core CPU: to be measured (grouped convs are slow on CPU).
"""

from configs import common

VARIANTS = ('', 'clip=2', 'clip=5', 'clip=10', 'policy=clr', 'policy=clr,clip=10')


def get_config(arg: str = ''):
  return common.clipped_bottleneck(arg, 'resnext56', batch_size=680)
