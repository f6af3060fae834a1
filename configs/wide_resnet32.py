"""Wide ResNet-32 on CIFAR-10: Smith 2018 (arXiv:1803.09820) Table 2 = Smith & Topin 2017 v3
"TBS 512" table, wide-resnet rows (digest §2.5, §7.4, §7.5).

The authors' `wide32cifar`: a 32-layer ResNet with stage widths 16 -> 64 -> 256; TBS 512
(4 GPUs x 128), Nesterov, BN MAF 0.9, weight decay 1e-4, updates = epochs x 50,000 / 512
(rounded down, as their x4.sh).
`policy=1cycle` (default), Caffe 1cycle (floor base/1000) with cyclical momentum 0.95 -> 0.85
on the same step size:
  epochs=25   0.1-0.5 / SS 12 epochs   87.3 +- 0.8 %
  epochs=50   0.1-1.0 / SS 23 epochs   91.3 +- 0.1 % (authors' run 1: 91.38 %, best 91.45 %)
  epochs=100  0.1-1.0 / SS 45 epochs   91.9 +- 0.2 %
`policy=step`, LR 0.1, momentum 0.9: epochs=100 86.7 +- 0.6 %, 200 88.7 +- 0.6 %, 400
"98.8 +- 0.4" (a transcription typo, UNCONFIRMED), 800 90.3 +- 1.0 %. The step policy's
boundaries are not in the digest: we use x0.1 at 50 % and 75 % of the run (UNCONFIRMED).
Paper values are means +- std over 4 runs (their runs also vary batch and init).

Arguments: `policy=1cycle|step`, `epochs=N`, `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/wide_resnet32.py \
      --args "policy=1cycle,epochs=50" --seeds 0 1 2 3

Hardware and time: 2018 IBM Power8 + 4 GPUs: not stated. This 2-core CPU: to be measured (the
wide net costs several times ResNet-56 per image; 50 epochs = 2.5 M images).
"""

from configs import common
from configs import default
from superconv import config_lib

ONE_CYCLE = {25: (0.1, 0.5, 12), 50: (0.1, 1.0, 23), 100: (0.1, 1.0, 45)}
STEP_EPOCHS = (100, 200, 400, 800)
VARIANTS = tuple(f'policy=1cycle,epochs={e}' for e in ONE_CYCLE) + tuple(
    f'policy=step,epochs={e}' for e in STEP_EPOCHS)


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy', 'epochs'))
  policy = common.choice(args, 'policy', ('1cycle', 'step'), '1cycle')
  c = default.get_config()
  common.paper_cifar_resnet(c, 'wide_resnet32', bn_momentum=0.9, gpus=4)
  c.batch_size = 512
  c.optimizer.nesterov = True
  if policy == '1cycle':
    epochs = common.choice(args, 'epochs', tuple(ONE_CYCLE), 50)
    base, peak, ss_epochs = ONE_CYCLE[epochs]
    common.smith2018_one_cycle(c, base, peak, common.epochs_to_steps(ss_epochs, 50_000, 512),
                               0.95, 0.85)
  else:
    epochs = common.choice(args, 'epochs', STEP_EPOCHS, 100)
  c.num_steps = common.epochs_to_steps(epochs, 50_000, 512)
  if policy == 'step':
    common.set_schedule(c, 'multistep', base_lr=0.1, gamma=0.1,
                        boundaries=(c.num_steps // 2, c.num_steps * 3 // 4))
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
