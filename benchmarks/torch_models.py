"""PyTorch twins of superconv's benchmark models, built layer for layer like the Flax ones.

Used only by `benchmarks/throughput.py` to compare the same model, batch and optimizer in
PyTorch eager and `torch.compile` against superconv's jitted step. Parameter counts match the
Flax models exactly (checked in tests/test_benchmarks.py).
"""

from __future__ import annotations

import re

import torch
from torch import nn
import torch.nn.functional as F


class _ConvBN(nn.Module):
  """conv3x3 (with bias, as the authors' prototxt) -> BN(+Scale)."""

  def __init__(self, cin, cout, stride=1, bn_momentum=0.95):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=True)
    # PyTorch's momentum is the weight of the new batch: 1 - Caffe's moving-average fraction.
    self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=1.0 - bn_momentum)

  def forward(self, x):
    return self.bn(self.conv(x))


class _Block(nn.Module):
  """Post-activation block; the first block of stages 2-3 downsamples like the paper's prototxt."""

  def __init__(self, width, downsample):
    super().__init__()
    self.downsample = downsample
    self.c1 = _ConvBN(width, width, stride=2 if downsample else 1)
    self.c2 = _ConvBN(width, width)

  def forward(self, x):
    y = self.c2(F.relu(self.c1(x)))
    shortcut = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False) if self.downsample else x
    y = F.relu(y + shortcut)
    if self.downsample:  # zero channels double the width
      y = torch.cat([y, torch.zeros_like(y)], dim=1)
    return y


class CaffeResNet(nn.Module):
  """ResNet-(6n+2) for CIFAR as the authors' Caffe prototxt builds it (digest §5.4)."""

  def __init__(self, depth=56, num_classes=10):
    super().__init__()
    n = (depth - 2) // 6
    self.stem = _ConvBN(3, 16)
    blocks, width = [], 16
    for stage in range(3):
      for i in range(n):
        down = stage > 0 and i == 0
        blocks.append(_Block(width, down))
        if down:
          width *= 2
    self.blocks = nn.Sequential(*blocks)
    self.fc = nn.Linear(64, num_classes)

  def forward(self, x):
    x = F.relu(self.stem(x))
    x = self.blocks(x)
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
  if name == 'lenet':
    return LeNet(num_classes)
  m = re.fullmatch(r'resnet(\d+)', name)
  if m and (int(m.group(1)) - 2) % 6 == 0:
    return CaffeResNet(int(m.group(1)), num_classes)
  raise ValueError(f'no PyTorch twin for model {name!r}; have lenet and resnet(6n+2)')


def param_count(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())
