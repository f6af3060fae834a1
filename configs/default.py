"""Every field superconv reads, with its unit. Experiment configs start from this and override.

The defaults are the paper's headline run (Smith & Topin 2017, Fig. 1a: ResNet-56 on CIFAR-10, CLR
0.1-3.0, step size 5,000, 10,000 iterations, batch 1,000, momentum 0.9, weight decay 1e-4, BN moving
average fraction 0.95). `configs/resnet56.py` names it; other files change only what differs.

A workdir holds one run: rerun on it, a config that differs from its config.json in a field
that changes what is trained is refused (superconv.workdir). Fields tagged `[op]` below are
operational (how the run is watched, saved or executed) and may differ; a tagged section covers
all of its fields (superconv.config_lib.operational_fields reads the tags).

Command:
  python -m superconv.main --config=configs/default.py --workdir=/tmp/sc
"""

import ml_collections

from superconv import config_lib
from superconv import schedule_registry


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = 'train'                 # 'train' | 'lr_range' | 'eval' (a workdir's latest checkpoint)
  c.seed = 0                       # seeds init, data order and augmentation
  c.num_steps = 10_000             # optimizer updates (Caffe "iterations")
  c.stop_after_steps = 0           # [op] end the run after this many updates (0: num_steps); the
                                   # schedule still spans num_steps (a truncated long baseline)
  c.batch_size = 1000              # global batch: images per update over all devices of all hosts
  c.eval_every_steps = 100         # [op] updates between evaluations on the full test split
                                   # (0: at the end only)
  c.log_every_steps = 100          # [op] updates between metrics.jsonl rows
  c.checkpoint_every_steps = 1000  # [op] updates between checkpoints (0: only the final one and on
                                   # preemption)
  c.keep_checkpoints = 3           # [op] checkpoints kept in workdir/checkpoints
  c.steps_per_dispatch = 10        # [op] updates fused into one jitted call (lax.scan) on
                                   # accelerators
  c.cpu_steps_per_dispatch = 4     # [op] the same on the CPU, unrolled (a loop body keeps XLA:CPU's
                                   # slow convolutions), for runs of at least
  c.cpu_unroll_min_steps = 1000    # [op] this many updates: the unrolled program compiles ~k x
                                   # longer
  c.progress_bar = True            # [op] tqdm bar on process 0
  c.lr_range_result = ''           # [op] path of an lr_range.json: its suggestion sets the LR
                                   # bounds (compared as the schedule fields it sets)
  c.compilation_cache_dir = '~/.cache/superconv/jax'  # [op] JAX's persistent compilation cache: a
                                   # second run or seed loads its compiled steps ('' = off)
  c.allow_config_change = False    # [op] continue a workdir's run although a training field differs
                                   # from its config.json (recorded in config_changes.jsonl)

  c.model = ml_collections.ConfigDict()
  c.model.name = 'resnet56'        # a key of superconv.models.MODELS (or a 'resnet{6n+2}' depth)
  c.model.dropout_rate = 0.0       # dropout probability after each BN (paper's Resnet56Dropout: 0.2)
  c.model.bn_momentum = 0.95       # BN moving-average fraction (Caffe MAF): 0.95 short runs, 0.999 long
  c.model.bn_epsilon = 1e-5        # BN variance epsilon (Caffe default)
  c.model.virtual_batch_size = 0   # images per BN group on a device (0: the whole per-device batch);
                                   # 125 reproduces the paper's 8 GPUs x 125 on one device
  c.model.dtype = 'float32'        # compute dtype: 'float32' | 'bfloat16' (params and BN stats fp32)

  c.data = ml_collections.ConfigDict()
  c.data.name = 'cifar10'          # cifar10 | cifar100 | mnist | fashion_mnist | imagenet2012 | fake
  c.data.source = 'tfds'           # 'tfds' | 'files' (data.path) | 'fake' (generated)
  c.data.path = ''                 # local file or folder for source='files' (tar.gz/zip/dir/IDX dir)
  c.data.tfds_data_dir = ''        # TFDS data dir ('' = TFDS default; gs:// allowed)
  c.data.train_subset = 0          # train on this many examples (0: all); paper Table 1 rows
  c.data.subset_seed = 0           # seed of the subset draw (fixed across runs)
  c.data.mirror = True             # random horizontal flips in training
  c.data.crop_padding = 0          # pad-and-random-crop in pixels (0: none, as the paper; 4: He et al.)
  c.data.mean = 'pixel'            # subtract the train-set mean 'pixel' (Caffe mean file) | 'channel' | 'none'
  c.data.scale = 1.0               # multiply after mean subtraction (Caffe CIFAR: 1.0 on 0-255 pixels)
  c.data.eval_batch_size = 1000    # [op] images per evaluation batch (the last partial batch
                                   # counts)
  c.data.validation_examples = 0   # > 0: hold this many training examples out (a class-balanced
                                   # draw, the same for every seed) and evaluate on them instead
                                   # of the test split (tuning reads validation, never test)
  c.data.fake_num_train = 512      # examples in the generated 'fake' train split
  c.data.fake_num_test = 256       # examples in the generated 'fake' test split
  c.data.cache_dir = ''            # [op] where decoded local archives are cached as .npz
                                   # ('' = ~/.cache/superconv)
  c.data.check_counts = True       # [op] a local copy of a set of known size (cifar10/100, mnist,
                                   # fashion_mnist) must hold all of it, class by class (False: a
                                   # deliberately smaller copy; superconv.data.sources.check_counts)
  # Streamed sets (imagenet2012): decoded and cropped on each host, a batch per update.
  c.data.image_size = 0            # side of the square train/eval crops in pixels (0: the set's, 224)
  c.data.num_threads = 16          # [op] decoding threads per host
  c.data.prefetch = 4              # [op] dispatches decoded ahead of the device, per host

  # The LR schedule: `name` plus that schedule's own arguments only, so a field of another
  # schedule is an error. superconv/schedule_registry.py lists every schedule's fields with their
  # defaults and units; a config sets one with `schedule_config(name, **fields)`.
  c.schedule = schedule_registry.schedule_config('triangular')  # CLR 0.1-3.0, step size 5,000

  c.momentum_schedule = ml_collections.ConfigDict()
  c.momentum_schedule.name = 'constant'  # constant | one_cycle | cyclical
  c.momentum_schedule.value = 0.9        # constant momentum (SGD) or Adam b1
  c.momentum_schedule.max_momentum = 0.95  # cyclical / 1cycle upper momentum
  c.momentum_schedule.min_momentum = 0.85  # cyclical / 1cycle lower momentum (at the LR peak)
  c.momentum_schedule.step_size = 0        # cyclical: updates per half cycle (0: schedule.step_size)
  # 'one_cycle' mirrors the LR 1cycle's pct_start, three_phase and anneal (schedule_registry.
  # MOMENTUM_FROM_LR), so its minimum falls exactly on the LR peak.

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'               # sgd | adam | adamw | adagrad | adadelta | rmsprop |
                                         # schedule_free_sgd | schedule_free_adamw (b1: momentum)
  c.optimizer.momentum_form = 'caffe'    # 'caffe': v = mu v + lr g, w -= v | 'optax': lr scales the trace
  c.optimizer.nesterov = False           # Nesterov momentum (SGD)
  c.optimizer.weight_decay = 1e-4        # L2 factor (per update, Caffe semantics)
  c.optimizer.decoupled_weight_decay = False  # True: AdamW-style decay w -= lr * wd * w
  c.optimizer.decay_bias = False         # decay conv biases (paper prototxts: conv bias decay_mult 0)
  c.optimizer.decay_fc_bias = False      # decay dense (FC) biases (Caffe InnerProduct default decay_mult 1: paper configs True)
  c.optimizer.decay_bn = True            # decay BN scale/shift (Caffe Scale layer: decay_mult 1)
  c.optimizer.bias_lr_mult = 1.0         # LR multiplier of conv biases (paper prototxt: 2)
  c.optimizer.grad_clip_norm = 0.0       # clip the global gradient norm (0: off)
  c.optimizer.b2 = 0.999                 # Adam beta2 (Caffe momentum2)
  c.optimizer.eps = 1e-8                 # Adam/AdaGrad/AdaDelta/RMSProp epsilon (Caffe delta)
  c.optimizer.rho = 0.0                  # AdaDelta decay (Caffe: the removed momentum line = 0) / RMSProp decay
  c.optimizer.initial_accumulator = 0.0  # AdaGrad initial accumulator
  c.optimizer.eval_bn_batches = 50       # schedule_free_*: train-mode batches run at the averaged
                                         # point x to recompute the BN statistics before every
                                         # evaluation (0: evaluate with the statistics of y)

  c.lr_range = ml_collections.ConfigDict()
  c.lr_range.min_lr = 0.0          # LR at update 0
  c.lr_range.max_lr = 3.0          # LR at the last update
  c.lr_range.num_steps = 5000      # updates in the sweep (paper Fig. 2b: 5k, 20k, 100k)
  c.lr_range.mode = 'linear'       # 'linear' | 'exp'
  c.lr_range.eval_every_steps = 100  # updates between held-out evaluations
  c.lr_range.smoothing = 0.98      # EMA factor of the smoothed training loss (bias-corrected)
  c.lr_range.diverge_factor = 4.0  # stop when smoothed loss > factor x best (0: never stop)
  c.lr_range.min_lr_div_clr = 4.0  # suggested min = max / this for CLR (paper: 3-4)
  c.lr_range.min_lr_div_1cycle = 10.0  # suggested min = max / this for 1cycle (Smith 2018: ~10)
  c.lr_range.reading = 'accuracy'  # the suggestion from: 'accuracy' (held-out, the paper's rule)
                                   # | 'loss' (valley of the training loss, fastai's lr_find)
  c.lr_range.min_rise = 0.1        # a reading needs the held-out accuracy to rise by more than
                                   # this (fraction) from the untrained net's: lr_range.suggest
  c.lr_range.eval_split = 'validation'  # read the curve on 'validation' (held out of the training
                                   # set) | 'test' (the paper's reading of the test accuracy)
  c.lr_range.eval_examples = 4000  # validation examples held out (or test examples drawn; 0 = the
                                   # whole test split): standard error <= 0.8 points of accuracy
  c.lr_range.eval_seed = 0         # seed of that draw (the same split for every run seed)
  c.lr_range.repeats = 1           # sweeps with different data orders; the median reading is used
  c.lr_range.run_steps = 0         # updates of the run the suggestion is for, for the cost report
                                   # (0: this config's num_steps before it became a sweep)
  c.lr_range.effective_step = 'cap'  # a fed run's largest lr/(1-m) is at most the tested one
                                   # ('cap') or equal to it ('match'): configure.apply_suggestion
  c.lr_range.accept_mismatch = False  # feed a result whose settings differ from this run's
  c.lr_range.momentum = 'start'    # a cyclical momentum is swept: 'start' (held at its largest,
                                   # where the run starts) | 'cyclical' (falling to its smallest
                                   # as the LR rises, as in the cycle's first half; Smith 2018)

  c.lr_estimate = ml_collections.ConfigDict()
  c.lr_estimate.enabled = False    # log the paper's Hessian-free optimal-LR estimate (§4)
  c.lr_estimate.ema = 0.9          # EMA factor of the logged estimate (the authors' scripts: 0.9)

  c.distributed = ml_collections.ConfigDict()  # [op] how the processes of a job find each other
  c.distributed.initialize = 'auto'      # 'auto' (JAX detects TPU pods / GKE / SLURM / MPI, else one
                                         # process) | 'always' (detection must succeed) | 'never'
  c.distributed.coordinator_address = ''  # host:port of process 0 (GPU clusters)
  c.distributed.num_processes = 0        # processes in the job (0: from the environment)
  c.distributed.process_id = -1          # this process (-1: from the environment)

  c.logging = ml_collections.ConfigDict()  # [op] where the rows are also written
  c.logging.tensorboard = True     # also write every metrics.jsonl row as TensorBoard scalars to
                                   # workdir/tensorboard (process 0; no TensorFlow needed)
  c.logging.wandb = ml_collections.ConfigDict()
  c.logging.wandb.enabled = False  # also log every row to Weights & Biases (pip install "superconv[wandb]")
  c.logging.wandb.project = 'superconv'  # W&B project
  c.logging.wandb.entity = ''      # W&B user or team ('' = the logged-in user's default)
  c.logging.wandb.name = ''        # run display name ('' = one W&B makes up); the run id is kept
                                   # in workdir/wandb_run_id so a resume continues the same run
  c.logging.wandb.mode = 'online'  # 'online' | 'offline' (files in workdir/wandb; `wandb sync` later) | 'disabled'

  return config_lib.finalize(c, arg)
