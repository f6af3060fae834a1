"""A small ResNet on 10,000 CIFAR-10 images at a fixed budget: the CIFAR arm of the budget study.

The authors' Caffe CIFAR ResNet at its smallest depth (model 'resnet8': one residual block per
stage, BN after every convolution; 29,162 parameters) with their setup
(`common.paper_cifar_resnet`: SGD momentum 0.9 in Caffe's form, weight decay 1e-4, raw pixels
minus the mean image, random mirror, no crop), trained on a fixed class-balanced draw of
10,000 training images (`data.train_subset`, Table 1's smallest row) at batch 128, BN over the
whole batch. Updates = epochs x 10,000 / 128, the same for every arm and tuning run.
`schedule=one_cycle|linear|wsd|cosine|schedule_free` picks the arm (`experiments/budget/arms.py`);
schedule-free recomputes BN statistics at its averaged point from 20 training batches before
every evaluation. `peak=X` is the peak LR; `validation=N` holds N of the other 40,000 training
images out and evaluates on them at the end only (tuning); `validation=0` (default) evaluates
the test split 6 times (the final seeds' curves).

Why this size: BN is what makes super-convergence (and schedule-free's recalibration) matter,
and at ~400 img/s for this net on the 2-core CPU, 4 epochs of 10,000 images fit ~100 s per
run, so a study of ~30 runs fits an hour. The archive is the JPEG copy of CIFAR-10 (slightly
lossy): pass it as `data=PATH`.

Arguments: `schedule=...`, `peak=X`, `epochs=N` (default 4), `validation=N`, `data=PATH`,
`seed=N`.

  python -m experiments.run --config=experiments/budget/cifar.py \
      --args "schedule=linear,peak=0.2,data=/path/to/cifar10-jpeg.tar.gz" --seeds 0
"""

from configs import common
from configs import default
from experiments.budget import arms
from superconv import config_lib

TRAIN = 10_000   # training images (a fixed draw of the 50,000)
BATCH = 128
EVALS = 6        # test evaluations of a final seed
VARIANTS = tuple(f'schedule={s}' for s in arms.SCHEDULES) + ('schedule=linear,validation=2000',)


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('schedule', 'peak', 'epochs', 'validation'))
  name = common.choice(args, 'schedule', arms.SCHEDULES, 'linear')
  peak = float(args.get('peak', 0.2))
  c = default.get_config()
  common.paper_cifar_resnet(c, 'resnet8', bn_momentum=0.95)
  common.set_bn_groups(c, 0)
  c.data.train_subset, c.data.subset_seed = TRAIN, 0
  c.batch_size = BATCH
  c.num_steps = common.epochs_to_steps(float(args.get('epochs', 4)), TRAIN, BATCH)
  c.data.validation_examples = int(args.get('validation', 0))
  if c.data.validation_examples:
    c.eval_every_steps = 0  # tuning: one evaluation, at the end
  else:
    c.eval_every_steps = -(-c.num_steps // EVALS)
  c.log_every_steps = 26
  c.checkpoint_every_steps = 0
  c.progress_bar = False
  c.optimizer.eval_bn_batches = 20
  arms.set_arm(c, name, peak)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
