"""DenseNet-40 (growth 12) on CIFAR-10: Smith 2018 (arXiv:1803.09820) Table 2 = Smith & Topin
2017 v3 "TBS 512" table, densenet rows (digest §2.5, §7.4, §7.5).

The authors' `genDensenet40` (liuzhuang13/DenseNetCaffe): 40 layers, growth 12, dropout 0.2,
BN MAF 0.999; TBS 512, Nesterov; updates = epochs x 50,000 / 512 (rounded down).
`policy=1cycle` (default): Caffe 1cycle 0.1 -> 4.0 (floor 1e-4), cyclical momentum 0.9 -> 0.85
on the same step size, weight decay 1e-6:
  epochs=50 SS 22 epochs 91.7 +- 0.3 % (authors' run 1: 91.53 %; text: 4,882 iterations)
  epochs=75 SS 34: 92.1 +- 0.2 %; epochs=100 SS 45: 92.2 +- 0.2 %;
  epochs=150 SS 70: 92.8 +- 0.1 % (text: 92.9 %, 14,648 iterations)
`policy=step`: LR 0.1, momentum 0.9, weight decay 1e-4, the logged `DenOrig` schedule: x0.316
at 50 %, 75 %, 87.5 % of the run, x0.316^2 at 93.75 % (their stepvalues were out of order; we
put the second factor one update later): epochs=100 91.3 +- 0.2 %, 200 92.1 +- 0.2 %,
400 92.7 +- 0.2 % (authors' run: 93.03 %, best 93.46 %).

Arguments: `policy=1cycle|step`, `epochs=N`, `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/densenet40.py \
      --args "policy=1cycle,epochs=50" --seeds 0 1 2 3

Hardware and time: 2018 4 GPUs: not stated. This 2-core CPU: to be measured (50 epochs =
2.5 M images).
"""

from configs import common
from configs import default
from superconv import config_lib

ONE_CYCLE = {50: 22, 75: 34, 100: 45, 150: 70}
STEP_EPOCHS = (100, 200, 400)
VARIANTS = tuple(f'policy=1cycle,epochs={e}' for e in ONE_CYCLE) + tuple(
    f'policy=step,epochs={e}' for e in STEP_EPOCHS)


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy', 'epochs'))
  policy = common.choice(args, 'policy', ('1cycle', 'step'), '1cycle')
  c = default.get_config()
  c.model.name, c.model.bn_momentum, c.model.dropout_rate = 'densenet40', 0.999, 0.2
  c.batch_size = 512
  c.optimizer.nesterov = True
  if policy == '1cycle':
    epochs = common.choice(args, 'epochs', tuple(ONE_CYCLE), 50)
    ss = common.epochs_to_steps(ONE_CYCLE[epochs], 50_000, 512)
    common.smith2018_one_cycle(c, 0.1, 4.0, ss, 0.9, 0.85)
    c.optimizer.weight_decay = 1e-6
  else:
    epochs = common.choice(args, 'epochs', STEP_EPOCHS, 100)
  c.num_steps = n = common.epochs_to_steps(epochs, 50_000, 512)
  if policy == 'step':
    common.set_schedule(c, 'multistep', base_lr=0.1, gamma=0.316, boundaries=(
        n // 2, n * 3 // 4, n * 7 // 8, n * 15 // 16, n * 15 // 16 + 1))
    c.momentum_schedule.value, c.optimizer.weight_decay = 0.9, 1e-4
    if config_lib.is_shrunk(args):  # 8 or 32 updates cannot hold 5 distinct boundaries
      c.schedule.boundaries = c.schedule.boundaries[:2]
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
