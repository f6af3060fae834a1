"""LeNet on Fashion-MNIST at a fixed budget of updates: one arm of the equal-budget schedule study.

Caffe's MNIST LeNet (model 'lenet': pixels x 1/256, no mean, no augmentation, weight decay 5e-4,
biases lr_mult 2 and decayed), batch 512, SGD with Caffe's momentum form; only the LR schedule
(and, for schedule-free, the optimizer) differs between arms. Updates = epochs x 60,000 / 512,
the same whether or not a validation split is held out, so every arm and every tuning run has
the same budget. `schedule=one_cycle|linear|wsd|cosine|schedule_free` picks the arm
(`experiments/budget/arms.py`; LeNet has no BN, so schedule-free has nothing to recalibrate).
`peak=X` is the peak LR, `validation=N` holds N training images out and evaluates on them at
the end only (tuning); `validation=0` (default) evaluates the test split every 25 updates (the
final seeds' curves).

Arguments: `schedule=...`, `peak=X`, `epochs=N` (default 3), `validation=N`, `data=PATH`,
`seed=N`.

  python -m experiments.run --config=experiments/budget/lenet.py \
      --args "schedule=linear,peak=0.05" --seeds 0

Hardware and time: 3 epochs (351 updates) take ~90 s on one idle core of the 2-core CPU
(2,200 img/s measured), longer when it is shared.
"""

from configs import common
from configs import default
from experiments.budget import arms
from superconv import config_lib

VARIANTS = tuple(f'schedule={s}' for s in arms.SCHEDULES) + (
    'schedule=linear,validation=5000', 'schedule=wsd,epochs=12')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('schedule', 'peak', 'epochs', 'validation'))
  name = common.choice(args, 'schedule', arms.SCHEDULES, 'linear')
  peak = float(args.get('peak', 0.05))
  c = default.get_config()
  common.caffe_lenet(c, 'fashion_mnist')
  c.data.source, c.data.path = 'files', '/usr/share/datasets/fashion-mnist'
  c.batch_size = 512
  c.num_steps = common.epochs_to_steps(float(args.get('epochs', 3)), 60_000, 512)
  c.data.validation_examples = int(args.get('validation', 0))
  if c.data.validation_examples:
    c.eval_every_steps, c.log_every_steps = 0, 50   # tuning: one evaluation, at the end
  else:
    c.eval_every_steps, c.log_every_steps = 25, 25  # final seeds: accuracy against updates
  c.progress_bar = False
  arms.set_arm(c, name, peak)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
