r"""An independent PyTorch twin of superconv's CIFAR training recipe: the fidelity check.

Written from the papers (Smith & Topin, arXiv:1708.07120; Smith, arXiv:1506.01186) and from Caffe's
semantics (BVLC/caffe `sgd_solver.cpp`, `batch_norm_layer.cpp`, `pooling_layer.cpp`,
`data_transformer.cpp`; the authors' `Resnet56Cifar.prototxt`), not from superconv's code. What it
shares with superconv is only the decoded images and the fixed subset draw (`superconv.data`), so
that both train on the same pixels; everything from there on is its own:

- the authors' Caffe ResNet-(6n+2) with Caffe's fillers (`benchmarks.torch_models`, with
  `caffe_ops`): the shortcut's 3x3 stride-2 AVE pool with pad 0 (Caffe's ceil-mode output, edge
  windows averaged over the pixels they cover), BN scale 1 and shift 0;
- Caffe's BatchNorm: each group of `bn_group` images normalised by its own biased statistics, the
  running statistics kept as decayed sums over a decayed count (`scale_factor`) with the
  n / (n - 1) variance correction, evaluation with sum / count;
- Caffe's SGD: `v = mu v + lr * lr_mult * (g + wd * decay_mult * w)`, `w -= v`; conv biases
  lr_mult 2 and decay_mult 0, FC bias lr_mult 2 and decay_mult 1, all else 1 and 1;
- Caffe's data layer: the per-pixel mean image of the full training split subtracted at each
  pixel's source position, then a mirror with probability 1/2, no crop padding;
- Smith's triangular CLR, lr(k) = base + (max - base) max(0, 1 - |k / ss - 2 c + 1|) with
  c = floor(1 + k / (2 ss)), or Caffe `multistep`;
- evaluation on the full 10,000-image test split.

  python -m research.torch_twin.torch_twin --data /path/to/cifar10-jpeg.tar.gz --subset 2500 \
      --seeds 0 1 2        # ResNet-20, CLR 0.1 -> 1.0 -> 0.1 over 200 updates at batch 128

Each seed writes `metrics.jsonl` (eval rows), `summary.json` and `run.json` under
`<out>/<name>/seed<N>/`, an arm of the study `<out>` (its manifest records the options). Needs
torch (the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from benchmarks import torch_models
from experiments import collect


# ------------------------------------------------------------------------------------------------
# The solver.


def clr(base: float, peak: float, step_size: int):
  """Smith's triangular CLR (arXiv:1506.01186, eq. for `triangular`): update k uses lr(k)."""

  def lr(k: int) -> float:
    cycle = math.floor(1 + k / (2 * step_size))
    x = abs(k / step_size - 2 * cycle + 1)
    return base + (peak - base) * max(0.0, 1 - x)

  return lr


def multistep(base: float, boundaries: tuple[int, ...], gamma: float):
  """Caffe `multistep`: base * gamma^(number of boundaries <= k)."""
  return lambda k: base * gamma ** sum(k >= b for b in boundaries)


def param_groups(model: nn.Module) -> list[tuple[torch.Tensor, float, float]]:
  """(param, lr_mult, decay_mult) as the authors' prototxt and Caffe's defaults give them."""
  out = []
  for name, p in model.named_parameters():
    if name.endswith('conv.bias'):
      out.append((p, 2.0, 0.0))
    elif name == 'fc.bias':
      out.append((p, 2.0, 1.0))
    else:  # conv and FC weights, BN scale and shift (Scale layer: no param block)
      out.append((p, 1.0, 1.0))
  return out


class CaffeSGD:
  """Caffe's SGDSolver: the learning rate lives inside the momentum history."""

  def __init__(self, groups, momentum: float, weight_decay: float):
    self.groups, self.momentum, self.weight_decay = groups, momentum, weight_decay
    self.history = [torch.zeros_like(p) for p, _, _ in groups]

  @torch.no_grad()
  def step(self, lr: float) -> None:
    for (p, lr_mult, decay_mult), v in zip(self.groups, self.history):
      g = p.grad + self.weight_decay * decay_mult * p
      v.mul_(self.momentum).add_(g, alpha=lr * lr_mult)
      p.sub_(v)


# ------------------------------------------------------------------------------------------------
# Data and the run.


def load_cifar(path: str, subset: int, subset_seed: int = 0):
  """uint8 NHWC train subset and test split, and the float32 mean image of the full train split.

  Read with superconv's loader so both implementations see the same decoded pixels and the same
  fixed subset; nothing of superconv's preprocessing is used.
  """
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  import ml_collections  # pylint: disable=g-import-not-at-top
  from superconv.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict({'name': 'cifar10', 'source': 'files', 'path': path,
                                   'tfds_data_dir': '', 'cache_dir': '',
                                   'fake_num_train': 256, 'fake_num_test': 100})
  if path == 'fake':  # superconv's generated CIFAR-shaped set (toy runs of the scripts)
    cfg.source = 'fake'
  train_x, train_y = sources.load_split(cfg, 'train')
  test_x, test_y = sources.load_split(cfg, 'test')
  mean = train_x.mean(axis=0, dtype=np.float64).astype(np.float32)  # Caffe's mean file
  if subset:
    idx = pipeline.subset_indices(train_y, subset, seed=subset_seed, num_classes=10)
    train_x, train_y = train_x[idx], train_y[idx]
  return train_x, train_y, test_x, test_y, mean


def _nchw(images: np.ndarray, mean: np.ndarray) -> torch.Tensor:
  return torch.from_numpy((images.astype(np.float32) - mean).transpose(0, 3, 1, 2).copy())


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000):
  model.eval()
  loss, correct = 0.0, 0
  for i in range(0, len(x), batch):
    logits = model(x[i:i + batch])
    loss += float(F.cross_entropy(logits, y[i:i + batch], reduction='sum'))
    correct += int((logits.argmax(1) == y[i:i + batch]).sum())
  model.train()
  return loss / len(x), correct / len(x)


def train(args, seed: int, data, out_dir: str | None = None) -> dict:
  """One seed of the recipe; returns the summary (and writes the files when `out_dir`)."""
  train_x, train_y, test_x, test_y, mean = data
  torch.manual_seed(seed)
  gen = torch.Generator().manual_seed(seed)
  device = torch.device(args.device)
  # True float32 unless asked: PyTorch lets cuDNN convolutions use TF32 by default.
  torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
  model = torch_models.CaffeCifarResNet(args.depth, 10, args.bn_fraction, args.bn_group).to(device)
  opt = CaffeSGD(param_groups(model), args.momentum, args.weight_decay)
  if args.policy == 'clr':
    lr_fn = clr(args.base_lr, args.max_lr, args.step_size)
  else:
    lr_fn = multistep(args.base_lr, tuple(args.boundaries), 0.1)
  xs, ys = _nchw(train_x, mean).to(device), torch.from_numpy(train_y.astype(np.int64)).to(device)
  xt, yt = _nchw(test_x, mean).to(device), torch.from_numpy(test_y.astype(np.int64)).to(device)
  rows, order, pos, t0 = [], torch.empty(0, dtype=torch.long), 0, time.perf_counter()
  model.train()
  for k in range(args.steps):
    if pos + args.batch > len(order):  # a new permutation per epoch; a partial tail is dropped
      order, pos = torch.randperm(len(xs), generator=gen), 0
    idx = order[pos:pos + args.batch].to(device)
    pos += args.batch
    x = xs[idx]
    flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)  # mirror after the mean, as Caffe
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    loss = F.cross_entropy(model(x), ys[idx])
    model.zero_grad(set_to_none=False)
    loss.backward()
    lr = lr_fn(k)
    opt.step(lr)
    if (k + 1) % args.eval_every == 0 or k + 1 == args.steps:
      eval_loss, eval_acc = evaluate(model, xt, yt)
      rows.append({'step': k + 1, 'lr': lr, 'train_loss': float(loss.detach()),
                   'eval_loss': eval_loss, 'eval_accuracy': eval_acc})
      print(json.dumps(rows[-1]), flush=True)
      if not math.isfinite(eval_loss):
        break
  wall = time.perf_counter() - t0
  summary = {'final_eval_accuracy': rows[-1]['eval_accuracy'], 'device': str(device),
             'best_eval_accuracy': max(r['eval_accuracy'] for r in rows),
             'steps': rows[-1]['step'], 'wall_seconds': wall, 'seed': seed,
             'torch': torch.__version__, 'threads': torch.get_num_threads(),
             'hardware': (torch.cuda.get_device_name(device) if device.type == 'cuda' else
                          f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores')}
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'metrics.jsonl'), 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in rows)
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=1)
    with open(os.path.join(out_dir, 'run.json'), 'w') as f:
      # 'args' is empty: experiments.collect reads it as a superconv config argument.
      json.dump({'command': ' '.join(['python -m research.torch_twin.torch_twin'] + sys.argv[1:]),
                 'args': '', 'options': vars(args), 'seed': seed}, f, indent=1)
  return summary


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--data', required=True,
                 help="the CIFAR-10 archive or folder, or 'fake' (generated, for toy runs)")
  p.add_argument('--subset', type=int, default=2500)
  p.add_argument('--depth', type=int, default=20)
  p.add_argument('--policy', choices=('clr', 'pclr'), default='clr')
  p.add_argument('--steps', type=int, default=200)
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--base-lr', type=float, default=0.1)
  p.add_argument('--max-lr', type=float, default=1.0)
  p.add_argument('--step-size', type=int, default=100)
  p.add_argument('--boundaries', type=int, nargs='*', default=[500, 700])
  p.add_argument('--momentum', type=float, default=0.9)
  p.add_argument('--weight-decay', type=float, default=1e-4)
  p.add_argument('--bn-fraction', type=float, default=0.95)
  p.add_argument('--bn-group', type=int, default=0, help='images per BN group (0: the batch)')
  p.add_argument('--eval-every', type=int, default=50)
  p.add_argument('--seeds', type=int, nargs='+', default=[0])
  p.add_argument('--out', default='experiments/results/superconvergence_cpu',
                 help='the study folder the runs go to, one arm per --name')
  p.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
  p.add_argument('--tf32', action='store_true', help='let CUDA use TF32 (default: true fp32)')
  p.add_argument('--name', default='', help='results folder name (default: from the options)')
  return p


# Options that say where the data and the runs are, not what the recipe is.
_PLACE = ('--data', '--seeds', '--out', '--name', '--device')


def recipe(argv: list[str]) -> str:
  """The options of `argv` that define the recipe (a manifest arm's `set`), in their order."""
  out, skip = [], False
  for a in argv:
    if a.split('=', 1)[0] in _PLACE:
      skip = '=' not in a
      continue
    if skip and not a.startswith('--'):
      continue
    skip = False
    out.append(a)
  return ' '.join(out)


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser().parse_args(argv)
  data = load_cifar(args.data, args.subset)
  name = args.name or f'resnet{args.depth}_subset{args.subset}_{args.policy}_{args.steps}'
  for seed in args.seeds:
    out_dir = os.path.join(args.out, name, f'seed{seed}')
    if os.path.exists(os.path.join(out_dir, 'summary.json')):
      print(f'[torch_twin] {out_dir}: done, skipped.')
      continue
    print(f'[torch_twin] {out_dir}: running seed {seed}.', flush=True)
    os.makedirs(out_dir, exist_ok=True)
    collect.record_arm(os.path.dirname(os.path.abspath(args.out)), os.path.basename(args.out),
                       name, config='research/torch_twin/torch_twin.py', args='',
                       sets=[recipe(argv)], seed=seed,
                       command='python -m research.torch_twin.torch_twin ' + ' '.join(argv))
    train(args, seed, data, out_dir)


if __name__ == '__main__':
  main()
