"""Bottleneck ResNet-56 on CIFAR-10: Smith & Topin 2017 (arXiv:1708.07120) README Fig. 11a and
the Results "Fig12a" range tests with gradient clipping, digest §2.4, §5.4.

The authors' `bottleneckResnet56`: pre-activation BN-ReLU-conv 1x1-3x3-1x1 bottlenecks, widths
16/16/64 -> 32/32/128 -> 64/64/256, 6 blocks per stage; batch 800 (100 x 8 GPUs), momentum 0.9,
weight decay 1e-4, BN MAF 0.95. (Their prototxt also tests with batch statistics, which we do
not reproduce: our test uses the running averages.)
`policy=lr_range` (default): LR 0 -> 3 over 20,000 updates, the global gradient norm clipped at
`clip=2|5|10` (default 2). Logs: clip 2 `lrRange3SS520kClip2Fig12a` 17.36 % at LR 3, peak
51.69 % at 2,900; clip 5: 11.96 %, peak 48.17 % at 2,800. No flat super-convergence curve.
`policy=clr`: CLR 0.1 -> 3.0 -> 0.1, SS 5,000, 10,000 updates, `clip=0` by default (README
Fig. 11a; no log, paper value UNCONFIRMED).

Arguments: `policy=lr_range|clr`, `clip=N`, `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/bottleneck_resnet56.py --args clip=5 --seeds 0

Hardware and time: 16 M images (range test); 2017 8 TITAN Black: to be measured. This 2-core
CPU: to be measured (roughly ResNet-56's 20-40 img/s: 5-9 days).
"""

from configs import common

VARIANTS = ('', 'clip=2', 'clip=5', 'clip=10', 'policy=clr', 'policy=clr,clip=5')


def get_config(arg: str = ''):
  return common.clipped_bottleneck(arg, 'bottleneck_resnet56', batch_size=800)
