"""ResNet-56 on reduced CIFAR-10 training sets: Smith & Topin 2017 (arXiv:1708.07120), Table 1.

`samples=10000|20000|30000|40000|50000` training images (a fixed class-balanced draw,
data.subset_seed 0; how the authors drew their LMDBs is UNCONFIRMED; the mean image stays the
full-set one as in x.sh TAB1c). `policy=pclr` (default): LR 0.35 x0.1 at 50k/70k, 80,000
updates, BN MAF 0.999; `policy=clr`: CLR 0.1 -> 3.0 -> 0.1, SS 5,000, 10,000 updates, MAF
0.95. Batch 1,000, momentum 0.9, weight decay 1e-4 (digest §2.2).

Paper / authors' log final (best @ it), digest §2.2:
  samples  PC-LR paper  log                      CLR paper  log
  50k      91.2         90.32 (90.39 @ 72,100)   92.4       92.44 (92.49 @ 9,800)
  40k      89.1         90.43 (90.59 @ 75,100)   91.1       91.10 (91.10 @ 10,000)
  30k      85.7         86.36 (86.52 @ 79,700)   89.6       89.64 (89.65 @ 9,800)
  20k      82.7         62.33 (76.40 @ 43,900)   87.9       87.92 (87.94 @ 9,900)
  10k      71.4         71.20 (71.26 @ 74,800)   80.6       80.59 (80.90 @ 9,700)

Arguments: `samples=N`, `policy=pclr|clr`, `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/resnet56_subset.py \
      --args "policy=clr,samples=10000" --seeds 0 1 2

Hardware and time: as `resnet56.py` (CLR, ~6 h on 8 TITAN Black; 3-6 days on this CPU) or
`resnet56_baseline.py` (PC-LR, ~49 h; 23-46 days); the subset size does not change the cost.
"""

from configs import common
from configs import default
from superconv import config_lib

VARIANTS = tuple(f'policy={p},samples={n}' for p in ('pclr', 'clr')
                 for n in (10_000, 20_000, 30_000, 40_000, 50_000))


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('samples', 'policy'))
  samples = common.choice(args, 'samples', (10_000, 20_000, 30_000, 40_000, 50_000), 10_000)
  policy = common.choice(args, 'policy', ('pclr', 'clr'), 'pclr')
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet56', bn_momentum=0.95)
  if policy == 'pclr':
    common.pc_lr(c, 0.35)
  else:
    common.clr(c, 0.1, 3.0, step_size=5000)
  c.data.train_subset = 0 if samples == 50_000 else samples
  c.data.subset_seed = 0
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
