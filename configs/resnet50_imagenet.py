"""ResNet-50 on ImageNet: Smith & Topin 2017 v3 ImageNet figure; Smith 2018 (arXiv:1803.09820)
Sec. 5.5 (digest §2.6).

TBS 128 (4 GPUs x 32), Nesterov, 224 training crops (the authors cropped 230) with mirror,
per-channel mean, BN MAF 0.9 (not stated for ResNet-50; the Inception prototxt's value).
`policy=1cycle` (default): Caffe 1cycle 0.05 -> 1.0 (floor 5e-5), step size 95,000, 200,000
updates (20 epochs), cyclical momentum 0.95 -> 0.85 (step 95,000), weight decay `wd=3e-6`
(default) or `wd=1e-6`. Paper: best 67.6 % top-1. Logs: WD 3e-6 final 66.37 % (best 67.31 % @
195,500); WD 1e-6 final 63.61 % (best 64.79 %).
`policy=step`: the authors' `asolver1`: LR 0.1 x0.94 every 20,000 updates (~2 epochs), momentum
0.9, weight decay 1e-4, 1,450,000 updates (145 epochs; their run stopped at 1,337,500).
Paper: 63.7 % after 130 epochs (extrapolated ~65 %); log 63.70 % (best 64.43 %).
(The paper text's standard LR is 0.045; the solver file has 0.1, digest §8.6.)

Arguments: `policy=1cycle|step`, `wd=X`, `smoke`, `data=PATH` (image folders), `seed=N`.

  python -m superconv.main --config=configs/resnet50_imagenet.py --workdir=/tmp/r50

Hardware and time: 2018 4 GPUs: not stated. This 2-core CPU: not feasible (25.6 M images);
to be measured on an accelerator.
"""

from configs import common
from configs import default
from superconv import config_lib

VARIANTS = ('', 'policy=1cycle,wd=3e-6', 'policy=1cycle,wd=1e-6', 'policy=step')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy', 'wd'))
  policy = common.choice(args, 'policy', ('1cycle', 'step'), '1cycle')
  c = default.get_config()
  common.smith2018_imagenet(c, 'resnet50', batch_size=128)
  if policy == '1cycle':
    c.num_steps = 200_000
    common.smith2018_one_cycle(c, 0.05, 1.0, 95_000, 0.95, 0.85)
    c.optimizer.weight_decay = float(common.choice(args, 'wd', (3e-6, 1e-6), 3e-6))
  else:
    common.imagenet_step_policy(c, num_steps=1_450_000)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
