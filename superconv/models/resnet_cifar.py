"""CIFAR ResNets: the paper's Caffe ResNet-20/56/110 and its relatives.

* `CaffeResNet` - `architectures/Resnet{20,56,110}Cifar.prototxt` of lnsmith54/super-convergence
  (digest §5.4), the network of every CIFAR figure in Smith & Topin 2017. Depth 6n + 2.
* `ResNetA` - He et al. 2016 (arXiv:1512.03385 §4.2) CIFAR ResNet with option-A shortcuts, the
  common reference implementation (not used by the paper; for comparison).
* `WideResNet` - `Cifar/architectures/wide32cifar.prototxt` of lnsmith54/hyperParam1, the "wide
  resnet" of Smith 2018 Table 2. Depth 6n + 2, widths 16 -> 64 -> 256.
* `BottleneckResNet` - `architectures/bottleneckResnet56.prototxt` and `ResNeXt56.prototxt`
  (the "Fig12" gradient-clipping range tests). Depth 9n + 2.

Layer order, padding and shortcut types are those of the prototxts; the differences that remain
are listed in each class docstring. Module names follow the flax convention the optimizer relies
on: BatchNorm modules are named 'bn*', conv/dense weights 'kernel', biases 'bias'.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from superconv.models import layers

ModuleDef = Callable[..., nn.Module]
Dtype = Any


def blocks_per_stage(depth: int, layers_per_block: int, name: str) -> int:
  """depth = layers_per_block * 3 * n + 2 -> n (ValueError otherwise)."""
  n, rem = divmod(depth - 2, 3 * layers_per_block)
  if rem or n < 1:
    raise ValueError(
        f'{name} depth must be {3 * layers_per_block}n+2 with n >= 1, got depth={depth}')
  return n


class _CifarBase(nn.Module):
  """Attributes shared by every CIFAR model (see docs/architecture.md)."""
  num_classes: int = 10
  dtype: Dtype = jnp.float32
  bn_momentum: float = 0.95
  bn_epsilon: float = 1e-5
  virtual_batch_size: int = 0
  dropout_rate: float = 0.0

  def _norm(self, **kwargs) -> ModuleDef:
    return functools.partial(layers.BatchNorm, momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon,
                             virtual_batch_size=self.virtual_batch_size, dtype=self.dtype,
                             **kwargs)

  def _stem_and_stages(self, x: jax.Array, train: bool, n: int, norm: ModuleDef,
                       block: Callable[..., nn.Module], *, stem_bias: bool = True) -> jax.Array:
    """conv3x3(widths[0]) -> BN -> ReLU, then n blocks at each of `self.widths`.

    `block(width, first, name)` builds one block; `first` is True for the first block of stages
    2 and 3, the one that halves the resolution.
    """
    x = x.astype(self.dtype)
    x = layers.conv(self.widths[0], 3, 1, use_bias=stem_bias, dtype=self.dtype,
                    name='conv_stem')(x)
    x = nn.relu(norm(name='bn_stem')(x, train))
    for s, width in enumerate(self.widths):
      for b in range(n):
        x = block(width, s > 0 and b == 0, f'stage{s + 1}_block{b + 1}')(x, train)
    return x

  def _head(self, x: jax.Array) -> jax.Array:
    x = layers.global_avg_pool(x)
    x = layers.dense(self.num_classes, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)


# --------------------------------------------------------------------------------------------
# The paper's network (Resnet56Cifar.prototxt)
# --------------------------------------------------------------------------------------------


class CaffeBlock(nn.Module):
  """Post-activation basic block of Resnet56Cifar.prototxt ("cbr" pairs).

    y = Scale(BN(conv3x3(x)));  y = relu(y)  (dropout after each Scale in Resnet56Dropout)
    y = Scale(BN(conv3x3(y)))
    out = relu(y + shortcut(x))

  A `downsample` block (first of stages 2 and 3) keeps the *input* width in both convs, strides
  the first conv by 2, takes a 3x3 stride-2 Caffe average pool of x as its shortcut, and after
  the ReLU concatenates zeros (the prototxt's DummyData) so the output has `features` channels:
  the upper `features - C_in` channels leave the block exactly 0.
  """
  features: int
  downsample: bool
  norm: ModuleDef
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c_in = x.shape[-1]
    width = c_in if self.downsample else self.features
    stride = 2 if self.downsample else 1
    y = layers.conv(width, 3, stride, dtype=self.dtype, name='conv1')(x)
    y = self.norm(name='bn1')(y, train)
    y = layers.dropout(y, self.dropout_rate, train)
    y = nn.relu(y)
    y = layers.conv(width, 3, 1, dtype=self.dtype, name='conv2')(y)
    y = self.norm(name='bn2')(y, train)
    y = layers.dropout(y, self.dropout_rate, train)
    shortcut = layers.caffe_avg_pool(x, 3, 2) if self.downsample else x
    out = nn.relu(y + shortcut)
    if self.downsample:
      zeros = jnp.zeros(out.shape[:-1] + (self.features - width,), out.dtype)
      out = jnp.concatenate([out, zeros], axis=-1)
    return out


class CaffeResNet(_CifarBase):
  """The paper's CIFAR ResNet (Resnet{20,56,110}Cifar.prototxt), depth 6n + 2.

  Stem: conv3x3(16, stride 1, pad 1, bias) -> BN -> Scale -> ReLU. Three stages of n
  `CaffeBlock`s at widths 16/32/64 (32x32, 16x16, 8x8); head: 8x8 average pool -> FC. Every conv
  has a bias (zero init) and msra weights, the FC xavier weights. Parameter counts (conv weights +
  conv biases + BN scale/shift + FC, 10 classes): ResNet-20 224,042, ResNet-56 808,682,
  ResNet-110 1,685,642 (digest §5.4).

  Differences from Caffe: the head uses a global mean (identical to Caffe's 8x8 pool on 32x32
  inputs, and defined for other sizes); BN running statistics use a plain EMA (see
  `layers.BatchNorm`). With `dropout_rate > 0` this is Resnet56Dropout (dropout after every
  block BN+Scale, before the ReLU; none after the stem).
  """
  depth: int = 56
  widths: Sequence[int] = (16, 32, 64)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = self._norm()
    block = lambda width, first, name: CaffeBlock(
        width, downsample=first, norm=norm, dtype=self.dtype, dropout_rate=self.dropout_rate,
        name=name)
    n = blocks_per_stage(self.depth, 2, 'CaffeResNet')
    return self._head(self._stem_and_stages(x, train, n, norm, block))


# --------------------------------------------------------------------------------------------
# He et al. option A
# --------------------------------------------------------------------------------------------


class BlockA(nn.Module):
  """He et al. basic block; option-A shortcut: x[::2, ::2] with zero channels appended."""
  features: int
  stride: int
  norm: ModuleDef
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = layers.conv(self.features, 3, self.stride, use_bias=False, dtype=self.dtype,
                    name='conv1')(x)
    y = self.norm(name='bn1')(y, train)
    y = nn.relu(layers.dropout(y, self.dropout_rate, train))
    y = layers.conv(self.features, 3, 1, use_bias=False, dtype=self.dtype, name='conv2')(y)
    y = self.norm(name='bn2')(y, train)
    y = layers.dropout(y, self.dropout_rate, train)
    shortcut = x[:, ::self.stride, ::self.stride, :]
    extra = self.features - x.shape[-1]
    if extra:
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, extra)))
    return nn.relu(y + shortcut)


class ResNetA(_CifarBase):
  """He et al. 2016 CIFAR ResNet, option A (arXiv:1512.03385 §4.2), depth 6n + 2.

  conv3x3(16) -> BN -> ReLU, three stages of n basic blocks at widths 16/32/64 (every block of a
  stage at the stage width; the first conv of stages 2 and 3 has stride 2), global average pool,
  FC. No conv biases; the shortcut subsamples by 2 and zero-pads the new channels (no params).
  ~0.27M / 0.85M / 1.7M parameters for depth 20 / 56 / 110.
  """
  depth: int = 56
  widths: Sequence[int] = (16, 32, 64)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = self._norm()
    block = lambda width, first, name: BlockA(
        width, stride=2 if first else 1, norm=norm, dtype=self.dtype,
        dropout_rate=self.dropout_rate, name=name)
    n = blocks_per_stage(self.depth, 2, 'ResNetA')
    return self._head(self._stem_and_stages(x, train, n, norm, block, stem_bias=False))


# --------------------------------------------------------------------------------------------
# Wide ResNet-32 (wide32cifar.prototxt)
# --------------------------------------------------------------------------------------------


class WideBlock(nn.Module):
  """Block of wide32cifar.prototxt: conv-BN-Scale-ReLU-conv-BN-Scale, SUM, *no* final ReLU.

  A downsampling block strides its first conv by 2 and projects the shortcut with a 2x2
  stride-2 conv (pad 0) + BN + Scale.
  """
  features: int
  stride: int
  norm: ModuleDef
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = layers.conv(self.features, 3, self.stride, dtype=self.dtype, name='conv1')(x)
    y = self.norm(name='bn1')(y, train)
    y = nn.relu(layers.dropout(y, self.dropout_rate, train))
    y = layers.conv(self.features, 3, 1, dtype=self.dtype, name='conv2')(y)
    y = self.norm(name='bn2')(y, train)
    y = layers.dropout(y, self.dropout_rate, train)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = layers.conv(self.features, self.stride, self.stride, pad=0, dtype=self.dtype,
                             name='conv_proj')(x)
      shortcut = self.norm(name='bn_proj')(shortcut, train)
    return y + shortcut


class WideResNet(_CifarBase):
  """Smith 2018's "wide resnet" (hyperParam1 wide32cifar.prototxt, "widenet32 with k=4").

  conv3x3(16) -> BN -> Scale -> ReLU; three groups of n = (depth - 2) / 6 `WideBlock`s at widths
  16, 64, 256 (x4 per stage instead of x2; 5 blocks each for depth 32); global average pool -> FC.
  Convs have biases (Caffe's default bias_term), msra weights everywhere including the FC, as in
  the prototxt (the authors' x4.sh swapped msra for xavier in half of the runs).
  """
  depth: int = 32
  widths: Sequence[int] = (16, 64, 256)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = self._norm()
    block = lambda width, first, name: WideBlock(
        width, stride=2 if first else 1, norm=norm, dtype=self.dtype,
        dropout_rate=self.dropout_rate, name=name)
    n = blocks_per_stage(self.depth, 2, 'WideResNet')
    x = self._stem_and_stages(x, train, n, norm, block)
    x = layers.global_avg_pool(x)
    x = layers.dense(self.num_classes, dtype=self.dtype, kernel_init=layers.msra_init,
                     name='fc')(x)
    return x.astype(jnp.float32)


# --------------------------------------------------------------------------------------------
# Bottleneck ResNet-56 / ResNeXt-56 (bottleneckResnet56.prototxt, ResNeXt56.prototxt)
# --------------------------------------------------------------------------------------------


class PreActBottleneck(nn.Module):
  """Pre-activation bottleneck ("brc" = BN-ReLU-conv) of bottleneckResnet56.prototxt.

    y = conv1x1(mid, stride)(relu(BN(x)))
    y = conv3x3(mid, groups)(relu(BN(y)))
    y = conv1x1(out)(relu(BN(y)))
    out = y + (conv1x1(out, stride)(x) if project else x)

  The BatchNorms have no Scale layer in the prototxts (no learned scale/shift). The projection
  ("chanInc") shortcut reads the raw block input, not the normalized one.
  """
  mid: int
  out: int
  stride: int
  project: bool
  norm: ModuleDef
  groups: int = 1
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = x
    convs = ((self.mid, 1, self.stride, 1), (self.mid, 3, 1, self.groups), (self.out, 1, 1, 1))
    for i, (features, kernel, stride, groups) in enumerate(convs, start=1):
      y = self.norm(name=f'bn{i}')(y, train)
      y = nn.relu(layers.dropout(y, self.dropout_rate, train))
      y = layers.conv(features, kernel, stride, groups=groups, dtype=self.dtype,
                      name=f'conv{i}')(y)
    shortcut = x
    if self.project:
      shortcut = layers.conv(self.out, 1, self.stride, dtype=self.dtype, name='conv_proj')(x)
    return y + shortcut


class BottleneckResNet(_CifarBase):
  """Pre-activation bottleneck ResNet / ResNeXt for CIFAR, depth 9n + 2 (n = 6 for 56).

  conv3x3(16, bias) -> three stages of n `PreActBottleneck`s -> BN -> ReLU -> global average pool
  -> FC (xavier). Stage s uses 3x3 width `mids[s]` and output width `outs[s]`; its first block
  has a 1x1 projection shortcut and, in stages 2 and 3, stride 2 in the first 1x1 conv and in
  the projection. All convs have biases; BN has no scale/shift (no Scale layers in the prototxt).

  * bottleneckResnet56.prototxt: mids 16/32/64, outs 64/128/256, groups 1.
  * ResNeXt56.prototxt: mids 32/64/128, outs 64/128/256, 3x3 convs with group 32.

  Checked against the prototxts: stage 1 of both files, the first block of stage 2 of both
  (bottleneck: 1x1 stride 2 on both paths; ResNeXt: 3x3 width 64 with group 32, output 128,
  projection stride 2) and the head. Stage 3 (and which ResNeXt stage-2 conv carries the
  stride) is assumed to follow the same pattern (widths from the digest §5.4): UNCONFIRMED.
  """
  depth: int = 56
  mids: Sequence[int] = (16, 32, 64)
  outs: Sequence[int] = (64, 128, 256)
  groups: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    n = blocks_per_stage(self.depth, 3, 'BottleneckResNet')
    norm = self._norm(use_scale=False, use_bias=False)
    x = x.astype(self.dtype)
    x = layers.conv(16, 3, 1, dtype=self.dtype, name='conv_stem')(x)
    for s, (mid, out) in enumerate(zip(self.mids, self.outs)):
      for b in range(n):
        x = PreActBottleneck(mid, out, stride=2 if (s > 0 and b == 0) else 1, project=(b == 0),
                             norm=norm, groups=self.groups, dtype=self.dtype,
                             dropout_rate=self.dropout_rate,
                             name=f'stage{s + 1}_block{b + 1}')(x, train)
    x = nn.relu(norm(name='bn_final')(x, train))
    return self._head(x)
