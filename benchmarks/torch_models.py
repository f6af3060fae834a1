"""PyTorch versions of superconv's CIFAR models, for the comparisons against PyTorch.

One Caffe ResNet-(6n+2), built as the authors' prototxt builds it (digest §5.4): conv3x3 + bias
-> BN -> Scale -> ReLU; downsampling blocks keep the input width in both convolutions (the first
with stride 2), add a 3x3 stride-2 average pool of the input and append as many zero channels
after the ReLU; 8x8 average pool; InnerProduct. Caffe's fillers: msra N(0, sqrt(2 / fan_in))
convolutions, xavier U(+-sqrt(3 / fan_in)) FC, zero biases. And Caffe's MNIST LeNet.

`benchmarks.throughput` times `create(name)` (PyTorch's own BatchNorm and pooling) against
superconv's step; the fidelity twin (`research/torch_twin`) trains `CaffeCifarResNet` with
Caffe's BatchNorm and pooling. Needs torch (the `bench` extra).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
import torch.nn.functional as F


class CaffeBatchNorm(nn.Module):
  """BatchNorm + Scale with Caffe's running statistics and ghost groups (NCHW)."""

  def __init__(self, channels: int, fraction: float, group: int = 0, eps: float = 1e-5):
    super().__init__()
    self.fraction, self.group, self.eps = fraction, group, eps
    self.scale = nn.Parameter(torch.ones(channels))
    self.shift = nn.Parameter(torch.zeros(channels))
    self.register_buffer('mean_sum', torch.zeros(channels))
    self.register_buffer('var_sum', torch.zeros(channels))
    self.register_buffer('count', torch.zeros(()))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    if self.training:
      g = self.group or b
      groups = x.reshape(b // g, g, c, h, w)
      mu = groups.mean(dim=(1, 3, 4), keepdim=True)
      var = (groups - mu).square().mean(dim=(1, 3, 4), keepdim=True)
      y = ((groups - mu) / torch.sqrt(var + self.eps)).reshape(b, c, h, w)
      with torch.no_grad():
        n = g * h * w
        self.mean_sum.mul_(self.fraction).add_(mu.reshape(-1, c).mean(0))
        self.var_sum.mul_(self.fraction).add_(var.reshape(-1, c).mean(0) * n / max(n - 1, 1))
        self.count.mul_(self.fraction).add_(1.0)
    else:
      count = self.count.clamp(min=1e-12)
      mean = torch.where(self.count > 0, self.mean_sum / count, torch.zeros_like(self.mean_sum))
      var = torch.where(self.count > 0, self.var_sum / count, torch.ones_like(self.var_sum))
      y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
    return y * self.scale[None, :, None, None] + self.shift[None, :, None, None]


def caffe_ave_pool_3x3_s2(x: torch.Tensor) -> torch.Tensor:
  """Caffe AVE pooling, kernel 3, stride 2, pad 0: out = ceil((H - 3) / 2) + 1, clipped windows."""
  h, w = x.shape[-2:]
  out_h, out_w = -(-(h - 3) // 2) + 1, -(-(w - 3) // 2) + 1
  pad_h, pad_w = (out_h - 1) * 2 + 3 - h, (out_w - 1) * 2 + 3 - w
  summed = F.avg_pool2d(F.pad(x, (0, pad_w, 0, pad_h)), 3, 2) * 9.0
  counts_h = torch.tensor([min(i * 2 + 3, h) - i * 2 for i in range(out_h)], dtype=x.dtype,
                          device=x.device)
  counts_w = torch.tensor([min(j * 2 + 3, w) - j * 2 for j in range(out_w)], dtype=x.dtype,
                          device=x.device)
  return summed / torch.outer(counts_h, counts_w)


class ConvBN(nn.Module):
  """conv3x3 with bias (msra filler) -> BatchNorm + Scale."""

  def __init__(self, cin: int, cout: int, stride: int, fraction: float, group: int,
               caffe_ops: bool = True):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=True)
    nn.init.normal_(self.conv.weight, 0.0, math.sqrt(2.0 / (cin * 9)))  # msra, fan_in
    nn.init.zeros_(self.conv.bias)
    # PyTorch's momentum is the weight of the new batch: 1 - Caffe's moving-average fraction.
    self.bn = (CaffeBatchNorm(cout, fraction, group) if caffe_ops else
               nn.BatchNorm2d(cout, eps=1e-5, momentum=1.0 - fraction))

  def forward(self, x):
    return self.bn(self.conv(x))


class Block(nn.Module):
  """Post-activation block; a downsampling one pools its shortcut and appends zero channels."""

  def __init__(self, width: int, downsample: bool, fraction: float, group: int,
               caffe_ops: bool = True):
    super().__init__()
    self.downsample, self.caffe_ops = downsample, caffe_ops
    self.a = ConvBN(width, width, 2 if downsample else 1, fraction, group, caffe_ops)
    self.b = ConvBN(width, width, 1, fraction, group, caffe_ops)

  def _pool(self, x):
    if self.caffe_ops:
      return caffe_ave_pool_3x3_s2(x)
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)

  def forward(self, x):
    y = self.b(F.relu(self.a(x)))
    y = F.relu(y + (self._pool(x) if self.downsample else x))
    return torch.cat([y, torch.zeros_like(y)], dim=1) if self.downsample else y


class CaffeCifarResNet(nn.Module):
  """The authors' ResNet-(6n+2) for 32x32 CIFAR images (Resnet56Cifar.prototxt).

  `caffe_ops=True`: Caffe's BatchNorm (ghost groups, decayed-sum statistics) and AVE pooling, as
  the fidelity twin needs them. `caffe_ops=False`: PyTorch's fused `BatchNorm2d` and `avg_pool2d`
  in the same places, as a PyTorch user would write the net: the throughput comparison's model.
  """

  def __init__(self, depth: int = 20, num_classes: int = 10, fraction: float = 0.95,
               group: int = 0, caffe_ops: bool = True):
    super().__init__()
    n = (depth - 2) // 6
    self.stem = ConvBN(3, 16, 1, fraction, group, caffe_ops)
    blocks, width = [], 16
    for stage in range(3):
      for i in range(n):
        down = stage > 0 and i == 0
        blocks.append(Block(width, down, fraction, group, caffe_ops))
        width *= 2 if down else 1
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(width, num_classes)
    bound = math.sqrt(3.0 / width)  # xavier, fan_in
    nn.init.uniform_(self.fc.weight, -bound, bound)
    nn.init.zeros_(self.fc.bias)

  def forward(self, x):
    x = self.blocks(F.relu(self.stem(x)))
    return self.fc(x.mean(dim=(2, 3)))


class LeNet(nn.Module):
  """Caffe's MNIST LeNet: conv5x5x20 - pool - conv5x5x50 - pool - fc500 - relu - fc10."""

  def __init__(self, num_classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 20, 5)
    self.conv2 = nn.Conv2d(20, 50, 5)
    self.fc1 = nn.Linear(800, 500)
    self.fc2 = nn.Linear(500, num_classes)

  def forward(self, x):
    x = F.max_pool2d(self.conv1(x), 2)
    x = F.max_pool2d(self.conv2(x), 2)
    return self.fc2(F.relu(self.fc1(x.flatten(1))))


def create(name: str, num_classes: int = 10) -> nn.Module:
  """The throughput comparison's model: 'lenet' or 'resnet<6n+2>' (PyTorch's BN and pooling)."""
  if name == 'lenet':
    return LeNet(num_classes)
  m = re.fullmatch(r'resnet(\d+)', name)
  if m and (int(m.group(1)) - 2) % 6 == 0:
    return CaffeCifarResNet(int(m.group(1)), num_classes, fraction=0.95, caffe_ops=False)
  raise ValueError(f'no PyTorch model {name!r}; have lenet and resnet(6n+2)')


def param_count(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())
