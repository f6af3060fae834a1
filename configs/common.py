"""Pieces shared by the experiment configs: argument checks, `data=`/`seed=`, epochs -> updates.

Not a config itself (no `get_config`). Every experiment file starts from `default.get_config()`,
overrides what its paper row changes, then calls `apply_common(c, args)` and
`config_lib.finalize(c, arg)`.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import ml_collections

from configs import default
from superconv import config_lib
from superconv import schedule_registry

# Words every config accepts: `smoke` (a newcomer's first run: generated data, 32 updates that
# learn), `tiny` (the test suite's 8-update shape), `data=PATH` (local files), `seed=N`.
COMMON_KEYS = ('smoke', 'tiny', 'data', 'seed')


def check_args(args: dict, allowed: Iterable[str]) -> None:
  """Raises ValueError naming an argument the config does not know (a typo must not pass)."""
  known = set(allowed) | set(COMMON_KEYS)
  unknown = sorted(set(args) - known)
  if unknown:
    raise ValueError(f'unknown config argument(s) {unknown}; this config accepts {sorted(known)}.')


def choice(args: dict, key: str, options: Sequence[Any], default: Any) -> Any:
  """`args[key]` (or `default`), which must be one of `options`."""
  value = args.get(key, default)
  if value not in options:
    raise ValueError(f'config argument {key}={value!r} is not one of {list(options)}.')
  return value


def apply_common(c: ml_collections.ConfigDict, args: dict) -> ml_collections.ConfigDict:
  """`data=PATH` reads local files (data.source='files'); `seed=N` sets the run seed."""
  if args.get('data'):
    c.data.source, c.data.path = 'files', str(args['data'])
  if 'seed' in args:
    c.seed = int(args['seed'])
  return c


def set_schedule(c: ml_collections.ConfigDict, name: str, **fields: Any
                 ) -> ml_collections.ConfigDict:
  """`c.schedule` = schedule `name` with its registry defaults and `fields`, nothing else.

  A field the schedule does not take is a ValueError naming the schedule and its fields (see
  `superconv/schedule_registry.py`), e.g. `set_schedule(c, 'one_cycle', max_lr=3.0)`.
  """
  c.schedule = schedule_registry.schedule_config(name, **fields)
  return c


def epochs_arg(args: dict, default: float) -> float:
  """`epochs=` of a config argument: a positive number of passes, fractions allowed (1.5)."""
  value = args.get('epochs', default)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
    raise ValueError(f'config argument epochs={value!r} must be a positive number of passes '
                     'over the training set (e.g. 12 or 1.5).')
  return value


def epochs_to_steps(epochs: float, num_train: int, batch_size: int) -> int:
  """Updates in `epochs` passes over `num_train` images at `batch_size`, rounded down.

  The authors' job script computes `max_iter = epochs * 50000 / TBS` in integer shell
  arithmetic (digest §7.5), e.g. 50 epochs at TBS 512 -> 4,882 updates.

  Examples:
    >>> epochs_to_steps(50, 50_000, 512), epochs_to_steps(95, 50_000, 512)
    (4882, 9277)
  """
  return int(epochs * num_train // batch_size)


def paper_cifar_resnet(c: ml_collections.ConfigDict, model: str, bn_momentum: float,
                       gpus: int = 8) -> ml_collections.ConfigDict:
  """The Smith & Topin 2017 CIFAR ResNet setup (digest §2.1, §5): TBS 1000, SGD momentum 0.9
  (Caffe form), weight decay 1e-4, conv biases lr_mult 2 / decay_mult 0, the FC bias lr_mult 2
  and decayed (no decay_mult in the prototxt: Caffe's default 1), raw pixels minus the mean
  image, random mirror, no padding, a test every 100 updates.

  BN normalises over `gpus` groups of the global batch, as each of the authors' GPUs
  normalised its own share (1708: 8 GPUs, so 8 groups of 125 at TBS 1000; 1803: 4 GPUs). The
  group size follows `batch_size` (a reference: `--config.batch_size=512` gives groups of 64);
  the config argument `bn_groups=G` changes the count, `bn_groups=0` normalises each device's
  whole batch."""
  c.model.name = model
  c.model.bn_momentum = bn_momentum
  c.batch_size = 1000
  c.optimizer.name = 'sgd'
  c.optimizer.weight_decay = 1e-4
  c.optimizer.bias_lr_mult = 2.0
  c.optimizer.decay_fc_bias = True
  c.momentum_schedule.name = 'constant'
  c.momentum_schedule.value = 0.9
  c.eval_every_steps = 100
  set_bn_groups(c, gpus)
  return c


def set_bn_groups(c: ml_collections.ConfigDict, groups: int) -> ml_collections.ConfigDict:
  """BN over `groups` groups of the global batch (0: the whole per-device batch)."""
  if groups < 0:
    raise ValueError(f'bn_groups must be >= 0, got {groups}')
  c.model.virtual_batch_size = c.get_ref('batch_size') // groups if groups else 0
  return c


def pc_lr(c: ml_collections.ConfigDict, base_lr: float = 0.35) -> ml_collections.ConfigDict:
  """The paper's PC-LR baseline: base_lr x0.1 at 50k and 70k, 80,000 updates, BN MAF 0.999."""
  set_schedule(c, 'multistep', base_lr=base_lr, boundaries=(50_000, 70_000), gamma=0.1)
  c.num_steps = 80_000
  c.model.bn_momentum = 0.999
  c.checkpoint_every_steps = 5000
  return c


def clr(c: ml_collections.ConfigDict, base_lr: float = 0.1, max_lr: float = 3.0,
        step_size: int = 5000) -> ml_collections.ConfigDict:
  """One CLR `triangular` cycle base -> max -> base (2 x step_size updates), BN MAF 0.95."""
  set_schedule(c, 'triangular', base_lr=base_lr, max_lr=max_lr, step_size=step_size,
               num_cycles=1)
  c.num_steps = 2 * step_size
  c.model.bn_momentum = 0.95
  return c


def lr_range(c: ml_collections.ConfigDict, max_lr: float, num_steps: int, *,
             min_lr: float = 0.0, paper: bool = True) -> ml_collections.ConfigDict:
  """An LR range test (mode 'lr_range'): LR linear min_lr -> max_lr over num_steps updates,
  the authors' `triangular` with base 0 and stepsize = max_iter (digest §3.2).

  `paper`: read the curve on the whole test split, as the paper's figures do; otherwise on a
  validation split held out of the training set (the default of every other config).
  """
  c.mode = 'lr_range'
  if paper:
    c.lr_range.eval_split, c.lr_range.eval_examples = 'test', 0
  c.lr_range.min_lr, c.lr_range.max_lr = min_lr, max_lr
  c.lr_range.num_steps, c.lr_range.mode = num_steps, 'linear'
  c.lr_range.eval_every_steps = 100
  c.lr_range.diverge_factor = 0.0  # the authors' sweeps ran to the end (digest §6.1)
  set_schedule(c, 'lr_range')  # its arguments are the lr_range section
  # A reference: `--config.lr_range.num_steps=N` then also sets the run length.
  c.num_steps = c.lr_range.get_ref('num_steps')
  c.model.bn_momentum = 0.95
  return c


def smith2018_one_cycle(c: ml_collections.ConfigDict, base_lr: float, max_lr: float,
                        step_size: int, max_momentum: float, min_momentum: float
                        ) -> ml_collections.ConfigDict:
  """The authors' Caffe `1cycle` (digest §3.3: up base -> max over step_size, down toward 0,
  floor base/1000 after 2 x step_size) with cyclical momentum max -> min over the same step
  size (§3.4), and Nesterov as in every [HP1] solver (§7.5)."""
  set_schedule(c, 'caffe_one_cycle', base_lr=base_lr, max_lr=max_lr, step_size=step_size,
               floor_div=1000.0)
  c.momentum_schedule.name = 'cyclical'
  c.momentum_schedule.max_momentum = max_momentum
  c.momentum_schedule.min_momentum = min_momentum
  c.momentum_schedule.step_size = 0  # 0: the LR step size
  c.optimizer.nesterov = True
  return c


def bn_groups(c: ml_collections.ConfigDict, args: dict) -> ml_collections.ConfigDict:
  """The config argument `bn_groups=G`: BN statistics over G groups of the global batch, as the
  paper's G GPUs (virtual_batch_size = batch_size / G); `bn_groups=0` turns the groups off (BN
  over each device's whole batch). Without it the config's own default stands."""
  if 'bn_groups' in args:
    set_bn_groups(c, int(args['bn_groups']))
  return c


def clr_pclr_or_range(c: ml_collections.ConfigDict, policy: str) -> ml_collections.ConfigDict:
  """The three Results-table runs of a paper CIFAR ResNet: `clr` (CLR 0.1-3.0, step size 5,000),
  `pclr` (the PC-LR baseline from 0.35) or `lr_range` (0 -> 2.0 over 80,000 updates)."""
  if policy == 'clr':
    return clr(c, 0.1, 3.0, step_size=5000)
  if policy == 'pclr':
    return pc_lr(c, 0.35)
  return lr_range(c, max_lr=2.0, num_steps=80_000)


def caffe_lenet(c: ml_collections.ConfigDict, dataset: str) -> ml_collections.ConfigDict:
  """Caffe's MNIST LeNet example (lenet_solver.prototxt, digest §2.5): raw pixels / 256, no mean,
  no mirror, weight decay 5e-4 on every parameter, bias LR x2, momentum 0.9."""
  c.model.name, c.data.name = 'lenet', dataset
  c.data.mean, c.data.scale, c.data.mirror = 'none', 1 / 256, False
  c.optimizer.weight_decay, c.optimizer.bias_lr_mult = 5e-4, 2.0
  c.optimizer.decay_bias = c.optimizer.decay_fc_bias = True
  c.momentum_schedule.value = 0.9
  return c


def caffe_lenet_schedule(c: ml_collections.ConfigDict, policy: str) -> ml_collections.ConfigDict:
  """Caffe's LeNet LR policies over c.num_steps: `inv` (0.01, gamma 1e-4, power 0.75) or `step`
  (0.01, x0.1 every third of the run)."""
  if policy == 'inv':
    set_schedule(c, 'inv', base_lr=0.01, gamma=1e-4, power=0.75)
  elif policy == 'step':
    set_schedule(c, 'step', base_lr=0.01, gamma=0.1, step_size=c.num_steps // 3)
  else:
    raise ValueError(f"Caffe's LeNet policies are 'inv' and 'step', got {policy!r}")
  return c


def smith2018_imagenet(c: ml_collections.ConfigDict, model: str, batch_size: int
                       ) -> ml_collections.ConfigDict:
  """The 2018 ImageNet runs (digest §2.6): BN MAF 0.9, per-channel mean, no
  pad-and-crop, Nesterov, a test every 10,000 updates (eval batch 500)."""
  c.model.name, c.model.bn_momentum = model, 0.9
  c.data.name, c.data.mean, c.data.crop_padding = 'imagenet2012', 'channel', 0
  c.data.eval_batch_size = 500
  c.batch_size = batch_size
  c.optimizer.nesterov = True
  c.eval_every_steps, c.checkpoint_every_steps, c.log_every_steps = 10_000, 5000, 100
  return c


def imagenet_step_policy(c: ml_collections.ConfigDict, num_steps: int) -> ml_collections.ConfigDict:
  """The authors' ImageNet baseline solver `asolver1`: LR 0.1 x0.94 every 20,000 updates,
  momentum 0.9, weight decay 1e-4, for num_steps updates."""
  c.num_steps = num_steps
  set_schedule(c, 'step', base_lr=0.1, gamma=0.94, step_size=20_000)
  c.momentum_schedule.value, c.optimizer.weight_decay = 0.9, 1e-4
  return c


def clipped_bottleneck(arg: str, model: str, batch_size: int) -> ml_collections.ConfigDict:
  """The authors' bottleneck ResNet-56 / ResNeXt-56 runs (Results "Fig12"): an LR range test 0 -> 3
  over 20k updates with gradient clipping (`clip=2|5|10`, default 2), or `policy=clr` (CLR 0.1-3,
  SS 5k, no clipping unless `clip=`); BN MAF 0.95. Only the model and the batch differ."""
  args = config_lib.parse_arg(arg)
  check_args(args, ('policy', 'clip'))
  policy = choice(args, 'policy', ('lr_range', 'clr'), 'lr_range')
  clip = choice(args, 'clip', (0, 2, 5, 10), 2 if policy == 'lr_range' else 0)
  c = default.get_config()
  paper_cifar_resnet(c, model, bn_momentum=0.95)
  c.batch_size = batch_size
  if policy == 'lr_range':
    lr_range(c, max_lr=3.0, num_steps=20_000)
  else:
    clr(c, 0.1, 3.0, step_size=5000)
  c.optimizer.grad_clip_norm = float(clip)
  apply_common(c, args)
  return config_lib.finalize(c, arg)
