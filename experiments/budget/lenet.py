"""LeNet on Fashion-MNIST at a fixed budget of updates: one arm of the equal-budget schedule study.

Caffe's MNIST LeNet (model 'lenet': pixels x 1/256, no mean, no augmentation, weight decay 5e-4,
biases lr_mult 2 and decayed), batch 512, SGD with Caffe's momentum form; only the LR schedule
(and, for schedule-free, the optimizer) differs between arms. Updates = epochs x 60,000 / 512,
the same whether or not a validation split is held out, so every arm and every tuning run has
the same budget.
  schedule=one_cycle      Smith's 1cycle: 3 phases, peak/10 -> peak -> peak/10 -> peak/1e4,
                          45 % up, cyclical momentum 0.95 -> 0.85 -> 0.95 (`schedules.one_cycle`)
  schedule=linear         linear decay from the peak to zero, no warm-up (airbench94_muon)
  schedule=wsd            warm-up 5 %, stable, (1 - sqrt) cooldown over the last 20 %
  schedule=cosine         warm-up 5 %, cosine to zero
  schedule=schedule_free  schedule-free SGD (b1 0.9), warm-up 5 % then constant; evaluated at
                          the average x (LeNet has no BN: nothing to recalibrate)
Momentum 0.9 (constant) for all but 1cycle. `peak=X` is the peak LR, `validation=N` holds N
training images out and evaluates on them at the end only (tuning); `validation=0` (default)
evaluates the test split every 25 updates (the final seeds' curves).

Arguments: `schedule=...`, `peak=X`, `epochs=N` (default 3), `validation=N`, `data=PATH`,
`seed=N`.

  python -m experiments.run --config=experiments/budget/lenet.py \
      --args "schedule=linear,peak=0.05" --seeds 0

Hardware and time: 3 epochs (351 updates) take ~90 s on one idle core of the 2-core CPU
(2,200 img/s measured), longer when it is shared.
"""

from configs import common
from configs import default
from superconv import config_lib

SCHEDULES = ('one_cycle', 'linear', 'wsd', 'cosine', 'schedule_free')
WARMUP = 0.05     # fraction of the run warming up (wsd, cosine, schedule_free)
COOLDOWN = 0.2    # WSD's cooldown fraction
VARIANTS = tuple(f'schedule={s}' for s in SCHEDULES) + ('schedule=linear,validation=5000',
                                                        'schedule=wsd,epochs=12')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('schedule', 'peak', 'epochs', 'validation'))
  name = common.choice(args, 'schedule', SCHEDULES, 'linear')
  peak = float(args.get('peak', 0.05))
  c = default.get_config()
  common.caffe_lenet(c, 'fashion_mnist')
  c.data.source, c.data.path = 'files', '/usr/share/datasets/fashion-mnist'
  c.batch_size = 512
  c.num_steps = n = common.epochs_to_steps(float(args.get('epochs', 3)), 60_000, 512)
  c.data.validation_examples = int(args.get('validation', 0))
  if c.data.validation_examples:
    c.eval_every_steps, c.log_every_steps = 0, 50   # tuning: one evaluation, at the end
  else:
    c.eval_every_steps, c.log_every_steps = 25, 25  # final seeds: accuracy against updates
  c.progress_bar = False
  warmup = int(round(WARMUP * n))
  if name == 'one_cycle':
    common.set_schedule(c, 'one_cycle', max_lr=peak)
    c.momentum_schedule.name = 'one_cycle'
    c.momentum_schedule.max_momentum, c.momentum_schedule.min_momentum = 0.95, 0.85
  elif name == 'linear':
    common.set_schedule(c, 'linear_decay', max_lr=peak)
  elif name == 'wsd':
    common.set_schedule(c, 'wsd', max_lr=peak, warmup_steps=warmup, decay_fraction=COOLDOWN,
                        cooldown='1-sqrt')
  elif name == 'cosine':
    common.set_schedule(c, 'warmup_cosine', max_lr=peak, warmup_steps=warmup)
  else:
    c.optimizer.name = 'schedule_free_sgd'
    common.set_schedule(c, 'warmup_constant', max_lr=peak, warmup_steps=warmup)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
