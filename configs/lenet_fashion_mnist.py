"""LeNet on Fashion-MNIST: ours, not a paper row. The MNIST LeNet experiment of Smith 2018
(arXiv:1803.09820, Table 2; `lenet_mnist.py`) moved to a harder 28x28 set, run offline.

Caffe's MNIST LeNet (model 'lenet'), pixels x 1/256 and no mean, no augmentation, weight decay
5e-4, biases lr_mult 2 and decayed; data from the local IDX folder
/usr/share/datasets/fashion-mnist (`data=PATH` for another). Updates = epochs x 60,000 / batch
(rounded down), `epochs=N` (default 12; lr_range 4).
  policy=inv     (default) Caffe `lenet_solver`: base 0.01, gamma 1e-4, power 0.75, SGD momentum
                 0.9, batch 64 (12 epochs = 11,250 updates; Caffe's own max_iter is 10,000)
  policy=step    as inv but LR 0.01 x0.1 every third of the run (batch 64)
  policy=1cycle  the Smith 2018 LeNet settings: TBS 512, Nesterov, Caffe 1cycle 0.01 -> 0.1
                 (floor 1e-5), cyclical momentum 0.95 -> 0.8, SS 5 epochs at 12 epochs
                 (MNIST table rows for 25/50/85 epochs; else SS = 0.45 x the run)
  policy=lr_range  LR 0 -> 0.2 linear at batch 512, momentum 0.9 (read max_lr off it)
  policy=cosine  today's baseline: linear warm-up to `peak` (default 0.1) over `warmup` of the
                 run (default 0.1), cosine decay to 0, SGD momentum 0.9, batch 512
`batch=N` sets the batch of any policy (the 2018 protocol compares 1cycle and `inv` at TBS 512:
`policy=inv,batch=512`); updates are still epochs x 60,000 / batch.
Paper: none (MNIST rows: inv 85 epochs 99.03 %, 1cycle 12 epochs 99.25 %). Ours: see README.

Arguments: `policy=inv|step|1cycle|lr_range|cosine`, `epochs=N`, `batch=N`, `peak=X`,
`warmup=F` (cosine), `smoke`, `data=PATH`, `seed=N`.

  python -m experiments.run --config=configs/lenet_fashion_mnist.py \
      --args "policy=1cycle" --seeds 0 1 2

Hardware and time: this 2-core CPU, estimated ~1,000-1,500 img/s unloaded: 12 epochs (720 k
images) 8-12 min. Measured: 129 img/s over the first 100 updates of the
Fashion-MNIST 1cycle run with other jobs sharing the 2 cores (load 3.6): ~1.5 h for 12 epochs.
"""

from configs import common
from configs import default
from superconv import config_lib

ONE_CYCLE = {12: (0.01, 0.1, 5), 25: (0.01, 0.1, 12), 50: (0.01, 0.1, 23), 85: (0.02, 0.2, 40)}
POLICIES = ('inv', 'step', '1cycle', 'lr_range', 'cosine')
VARIANTS = tuple(f'policy={p}' for p in POLICIES) + (
    'policy=1cycle,epochs=25', 'policy=1cycle,epochs=30', 'policy=1cycle,epochs=2',
    'policy=inv,batch=512', 'policy=cosine,peak=0.05,warmup=0.3')


def get_config(arg: str = ''):
  args = config_lib.parse_arg(arg)
  common.check_args(args, ('policy', 'epochs', 'batch', 'peak', 'warmup'))
  policy = common.choice(args, 'policy', POLICIES, 'inv')
  epochs = common.epochs_arg(args, 4 if policy == 'lr_range' else 12)
  c = default.get_config()
  common.caffe_lenet(c, 'fashion_mnist')
  c.data.source, c.data.path = 'files', '/usr/share/datasets/fashion-mnist'
  c.batch_size = int(args.get('batch', 64 if policy in ('inv', 'step') else 512))
  c.eval_every_steps = 500 if c.batch_size == 64 else 100
  c.num_steps = n = common.epochs_to_steps(epochs, 60_000, c.batch_size)
  if n < 1:
    raise ValueError(f'epochs={epochs} at batch {c.batch_size} is less than one update '
                     f'({60_000 / c.batch_size:g} updates per epoch).')
  if policy in ('inv', 'step'):
    common.caffe_lenet_schedule(c, policy)
  elif policy == '1cycle':
    if epochs in ONE_CYCLE:
      base, peak, ss_epochs = ONE_CYCLE[epochs]
      ss = common.epochs_to_steps(ss_epochs, 60_000, 512)
    else:
      base, peak, ss = 0.01, 0.1, max(1, int(0.45 * n))
    common.smith2018_one_cycle(c, base, peak, ss, 0.95, 0.8)
  elif policy == 'cosine':
    common.set_schedule(c, 'warmup_cosine', max_lr=float(args.get('peak', 0.1)),
                        warmup_steps=int(float(args.get('warmup', 0.1)) * n))
  else:
    common.lr_range(c, max_lr=0.2, num_steps=n, paper=False)  # ours: read on validation
  common.apply_common(c, args)
  return config_lib.finalize(c, arg)
