"""Inception-ResNet-v2 on ImageNet: Smith & Topin 2017 v3 ImageNet figure; Smith 2018
(arXiv:1803.09820) Sec. 5.5 (digest §2.6).

TBS 112 (4 GPUs x 28), Nesterov, BN MAF 0.9 (the [HP1] prototxt), 224 training crops with
mirror (the authors cropped 230; the usual 299 is not used), per-channel mean.
`policy=1cycle` (default): Caffe 1cycle 0.05 -> 1.0 (floor 5e-5), step size 108,000, 220,000
updates (~19 epochs), cyclical momentum 0.95 -> 0.85 with the logged CM step 1,080,000 (10x the
LR step, probably a typo: the momentum only fell to 0.93); `cm=fixed` uses 108,000.
Weight decay `wd=3e-6` (default), `1e-6`, `1e-5`. Paper: 74.0 % top-1 (WD 3e-6). Logs: WD 3e-6
final 73.82 / 73.86 % (best 74.72 / 75.48 %); WD 1e-6 72.96 / 72.26 %; WD 1e-5 stopped at
129,500 (43.64 %).
`policy=step`: `asolver1`, LR 0.1 x0.94 every 20,000 updates, momentum 0.9, WD 1e-4, 1,595,000
updates (145 epochs at the 1cycle run's 11,000 updates per epoch; their run stopped at
1,090,000). Paper: 67.6 % after 100 epochs (extrapolated 69-70 %); log 68.02 % (best 69.80 %).

Arguments: `policy=1cycle|step`, `wd=X`, `cm=logged|fixed`, `smoke`, `data=PATH`, `seed=N`.

  python -m superconv.main --config=configs/inception_resnet_v2_imagenet.py --workdir=/tmp/irv2

Hardware and time: 2018 4 GPUs: not stated. This 2-core CPU: not feasible (24.6 M images);
to be measured on an accelerator.
"""

from configs import common
from configs import default
from superconv import config_lib

VARIANTS = ('', 'wd=1e-6', 'wd=1e-5', 'cm=fixed', 'policy=step')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy', 'wd', 'cm'))
  policy = common.choice(args, 'policy', ('1cycle', 'step'), '1cycle')
  c = default.get_config()
  common.smith2018_imagenet(c, 'inception_resnet_v2', batch_size=112)
  if policy == '1cycle':
    c.num_steps = 220_000
    common.smith2018_one_cycle(c, 0.05, 1.0, 108_000, 0.95, 0.85)
    cm = common.choice(args, 'cm', ('logged', 'fixed'), 'logged')
    c.momentum_schedule.step_size = 1_080_000 if cm == 'logged' else 0  # 0: LR's
    c.optimizer.weight_decay = float(common.choice(args, 'wd', (3e-6, 1e-6, 1e-5), 3e-6))
  else:
    common.imagenet_step_policy(c, num_steps=1_595_000)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
