"""LeNet on MNIST: Smith 2018 (arXiv:1803.09820) Table 2 = Smith & Topin 2017 v3 "TBS 512" table,
MNIST rows (digest §2.5, §7.4).

Caffe's MNIST LeNet (model 'lenet'), pixels x 1/256 and no mean (Caffe `scale: 0.00390625`),
no augmentation, weight decay 5e-4, biases lr_mult 2 and decayed (Caffe defaults), TBS 512,
Nesterov as every [HP1] solver (the MNIST solver files are not published: UNCONFIRMED);
updates = epochs x 60,000 / 512 (rounded down; 85 epochs = 9,960).
  policy=inv   (default) base 0.01, gamma 1e-4, power 0.75, momentum 0.9, 85 epochs: 99.03 +- 0.04 %
  policy=step  base 0.01, momentum 0.9, 85 epochs: 99.00 +- 0.04 %. Its step size and gamma are
               not in the digest: we use x0.1 every third of the run (UNCONFIRMED).
  policy=1cycle  Caffe 1cycle (floor base/1000) + cyclical momentum 0.95 -> 0.8 on the same SS:
    epochs=12  0.01-0.1 / SS 5 epochs    99.25 +- 0.03 %
    epochs=25  0.01-0.1 / SS 12 epochs   99.28 +- 0.06 %
    epochs=50  0.01-0.1 / SS 23 epochs   99.27 +- 0.07 %
    epochs=85  0.02-0.2 / SS 40 epochs   99.35 +- 0.03 %
No authors' logs for MNIST. `epochs=12|25|50|85` also sets the inv/step length.

Arguments: `policy=inv|step|1cycle`, `epochs=N`, `smoke`, `data=PATH` (an IDX folder), `seed=N`.

  python -m experiments.run --config=configs/lenet_mnist.py \
      --args "policy=1cycle,epochs=12" --seeds 0 1 2 3

Hardware and time: this 2-core CPU, estimated ~1,000-1,500 img/s unloaded: 12 epochs (720 k
images) 8-12 min, 85 epochs 1-1.5 h. Measured: 129 img/s over the first 100 updates of the
Fashion-MNIST 1cycle run with other jobs sharing the 2 cores (load 3.6): ~1.5 h for 12 epochs.
"""

from configs import common
from configs import default
from superconv import config_lib

ONE_CYCLE = {12: (0.01, 0.1, 5), 25: (0.01, 0.1, 12), 50: (0.01, 0.1, 23), 85: (0.02, 0.2, 40)}
VARIANTS = ('', 'policy=inv,epochs=85', 'policy=step,epochs=85') + tuple(
    f'policy=1cycle,epochs={e}' for e in ONE_CYCLE)


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy', 'epochs'))
  policy = common.choice(args, 'policy', ('inv', 'step', '1cycle'), 'inv')
  epochs = common.choice(args, 'epochs', tuple(ONE_CYCLE), 12 if policy == '1cycle' else 85)
  c = default.get_config()
  common.caffe_lenet(c, 'mnist')
  c.batch_size = 512
  c.num_steps = common.epochs_to_steps(epochs, 60_000, 512)
  c.optimizer.nesterov = True
  if policy in ('inv', 'step'):
    common.caffe_lenet_schedule(c, policy)
  else:
    base, peak, ss_epochs = ONE_CYCLE[epochs]
    common.smith2018_one_cycle(c, base, peak, common.epochs_to_steps(ss_epochs, 60_000, 512),
                               0.95, 0.8)
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
