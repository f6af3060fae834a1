"""ImageNet models of Smith 2018 §5.5 / Smith & Topin 2017 (digest §2.6): ResNet-50 and
Inception-ResNet-v2, plus tiny variants of both for CPU smoke tests.
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


class _ImageNetBase(nn.Module):
  """Attributes shared by the ImageNet models (see docs/architecture.md)."""
  num_classes: int = 1000
  dtype: Dtype = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  virtual_batch_size: int = 0
  dropout_rate: float = 0.0

  def _norm(self) -> ModuleDef:
    return functools.partial(layers.BatchNorm, momentum=self.bn_momentum,
                             epsilon=self.bn_epsilon,
                             virtual_batch_size=self.virtual_batch_size, dtype=self.dtype)

  def _head(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.global_avg_pool(x)
    x = layers.dropout(x, self.dropout_rate, train)
    x = layers.dense(self.num_classes, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)


# --------------------------------------------------------------------------------------------
# ResNet-50
# --------------------------------------------------------------------------------------------


class BottleneckV1(nn.Module):
  """He et al. 2016 bottleneck: 1x1(mid) -> 3x3(mid) -> 1x1(4 mid), BN after each, ReLU after
  the first two and after the sum; projection shortcut (1x1 conv + BN) when the shape changes."""
  mid: int
  stride: int
  norm: ModuleDef
  stride_in_3x3: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    out = 4 * self.mid
    s1, s3 = (1, self.stride) if self.stride_in_3x3 else (self.stride, 1)
    y = layers.conv(self.mid, 1, s1, use_bias=False, dtype=self.dtype, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y, train))
    y = layers.conv(self.mid, 3, s3, use_bias=False, dtype=self.dtype, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y, train))
    y = layers.conv(out, 1, 1, use_bias=False, dtype=self.dtype, name='conv3')(y)
    y = self.norm(name='bn3')(y, train)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != out:
      shortcut = layers.conv(out, 1, self.stride, use_bias=False, dtype=self.dtype,
                             name='conv_proj')(x)
      shortcut = self.norm(name='bn_proj')(shortcut, train)
    return nn.relu(y + shortcut)


class ResNet50(_ImageNetBase):
  """ResNet-50 v1 (He et al. 2016, arXiv:1512.03385 Table 1), as the original Caffe model.

  conv7x7(64, stride 2, pad 3) -> BN -> ReLU -> maxpool 3x3/2 -> 4 stages of bottlenecks
  (`stage_sizes` 3/4/6/3, widths 64/128/256/512, x4 expansion) -> global average pool
  -> [dropout] -> FC. No conv biases, msra conv init, xavier FC. The stride of a downsampling
  block is on its first 1x1 conv, as the original Caffe model ("v1"); `stride_in_3x3=True` gives
  the torchvision "v1.5" variant (same parameter count, 25,557,032 for 1000 classes). The max
  pool uses 'SAME' padding, equal to Caffe's ceil-mode pooling for even sizes (112 -> 56).
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  base_width: int = 64
  stride_in_3x3: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = self._norm()
    x = x.astype(self.dtype)
    x = layers.conv(self.base_width, 7, 2, pad=3, use_bias=False, dtype=self.dtype,
                    name='conv_stem')(x)
    x = nn.relu(norm(name='bn_stem')(x, train))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for s, size in enumerate(self.stage_sizes):
      for b in range(size):
        x = BottleneckV1(self.base_width * 2**s, stride=2 if (s > 0 and b == 0) else 1,
                         norm=norm, stride_in_3x3=self.stride_in_3x3, dtype=self.dtype,
                         name=f'stage{s + 1}_block{b + 1}')(x, train)
    return self._head(x, train)


# --------------------------------------------------------------------------------------------
# Inception-ResNet-v2
# --------------------------------------------------------------------------------------------


class ConvBN(nn.Module):
  """conv (no bias, TF padding) -> BN -> [ReLU]; the unit of Inception-ResNet-v2."""
  features: int
  kernel: tuple[int, int]
  norm: ModuleDef
  strides: int = 1
  padding: str = 'SAME'
  relu: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Conv(self.features, self.kernel, strides=(self.strides, self.strides),
                padding=self.padding, use_bias=False, dtype=self.dtype,
                param_dtype=jnp.float32, kernel_init=layers.msra_init, name='conv')(x)
    x = self.norm(name='bn')(x, train)
    return nn.relu(x) if self.relu else x


class InceptionResNetV2(_ImageNetBase):
  """Inception-ResNet-v2 (Szegedy et al. 2016, arXiv:1602.07261), in the layout of the
  authors' reference TF-slim implementation (`inception_resnet_v2.py`).

    stem      conv3x3/2(32,V) conv3x3(32,V) conv3x3(64) maxpool3x3/2(V) conv1x1(80,V)
              conv3x3(192,V) maxpool3x3/2(V)
    Mixed_5b  [1x1 96 | 1x1 48, 5x5 64 | 1x1 64, 3x3 96, 3x3 96 | avgpool3x3, 1x1 64] -> 320
    A  x10    x + 0.17 * up([1x1 32 | 1x1 32, 3x3 32 | 1x1 32, 3x3 48, 3x3 64]); ReLU
    Mixed_6a  [3x3/2 384 V | 1x1 256, 3x3 256, 3x3/2 384 V | maxpool3x3/2 V] -> 1088
    B  x20    x + 0.10 * up([1x1 192 | 1x1 128, 1x7 160, 7x1 192]); ReLU
    Mixed_7a  [1x1 256, 3x3/2 384 V | 1x1 256, 3x3/2 288 V | 1x1 256, 3x3 288, 3x3/2 320 V |
               maxpool3x3/2 V] -> 2080
    C  x9+1   x + 0.20 * up([1x1 192 | 1x1 192, 1x3 224, 3x1 256]); ReLU (the last block:
              scale 1, no ReLU)
    head      conv1x1(1536) -> global average pool -> dropout -> FC

  Every conv is ConvBN (no bias, BN with scale and shift, ReLU) except the residual
  up-projections `up`, 1x1 convs with bias and no BN/activation. The paper's original stem
  (its Fig. 3, with branch concatenations) differs from the reference code's used here.
  `width_mult` scales every width, `repeats` the A/B/C counts, and `valid_padding=False`
  replaces the 'VALID' paddings by 'SAME' (used by the tiny variant, so 32x32 inputs work; the
  full model needs inputs of at least 75x75 with 'VALID').
  """
  repeats: Sequence[int] = (10, 20, 10)
  width_mult: float = 1.0
  valid_padding: bool = True

  def _w(self, n: int) -> int:
    return max(1, int(round(n * self.width_mult)))

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    norm = self._norm()
    valid = 'VALID' if self.valid_padding else 'SAME'
    w = self._w

    def cbr(features, kernel, strides=1, padding='SAME', name=None):
      k = (kernel, kernel) if isinstance(kernel, int) else kernel
      return ConvBN(w(features), k, norm, strides=strides, padding=padding, dtype=self.dtype,
                    name=name)

    def maxpool(y):
      return nn.max_pool(y, (3, 3), strides=(2, 2), padding=valid)

    x = x.astype(self.dtype)
    x = cbr(32, 3, 2, valid, name='stem_1a')(x, train)
    x = cbr(32, 3, 1, valid, name='stem_2a')(x, train)
    x = cbr(64, 3, name='stem_2b')(x, train)
    x = maxpool(x)
    x = cbr(80, 1, 1, valid, name='stem_3b')(x, train)
    x = cbr(192, 3, 1, valid, name='stem_4a')(x, train)
    x = maxpool(x)

    # Mixed_5b (Inception-A without residual).
    b0 = cbr(96, 1, name='mixed5b_b0')(x, train)
    b1 = cbr(48, 1, name='mixed5b_b1_0')(x, train)
    b1 = cbr(64, 5, name='mixed5b_b1_1')(b1, train)
    b2 = cbr(64, 1, name='mixed5b_b2_0')(x, train)
    b2 = cbr(96, 3, name='mixed5b_b2_1')(b2, train)
    b2 = cbr(96, 3, name='mixed5b_b2_2')(b2, train)
    b3 = nn.avg_pool(x, (3, 3), strides=(1, 1), padding='SAME', count_include_pad=False)
    b3 = cbr(64, 1, name='mixed5b_b3')(b3, train)
    x = jnp.concatenate([b0, b1, b2, b3], axis=-1)

    def residual(y, branches, scale, relu, name):
      outs = []
      for i, branch in enumerate(branches):
        z = y
        for j, (features, kernel) in enumerate(branch):
          z = cbr(features, kernel, name=f'{name}_b{i}_{j}')(z, train)
        outs.append(z)
      mixed = jnp.concatenate(outs, axis=-1)
      up = nn.Conv(y.shape[-1], (1, 1), use_bias=True, dtype=self.dtype,
                   param_dtype=jnp.float32, kernel_init=layers.msra_init,
                   bias_init=nn.initializers.zeros, name=f'{name}_up')(mixed)
      y = y + scale * up
      return nn.relu(y) if relu else y

    block_a = (((32, 1),), ((32, 1), (32, 3)), ((32, 1), (48, 3), (64, 3)))
    for i in range(self.repeats[0]):
      x = residual(x, block_a, 0.17, True, f'block_a{i + 1}')

    # Mixed_6a (Reduction-A).
    b0 = cbr(384, 3, 2, valid, name='mixed6a_b0')(x, train)
    b1 = cbr(256, 1, name='mixed6a_b1_0')(x, train)
    b1 = cbr(256, 3, name='mixed6a_b1_1')(b1, train)
    b1 = cbr(384, 3, 2, valid, name='mixed6a_b1_2')(b1, train)
    x = jnp.concatenate([b0, b1, maxpool(x)], axis=-1)

    block_b = (((192, 1),), ((128, 1), (160, (1, 7)), (192, (7, 1))))
    for i in range(self.repeats[1]):
      x = residual(x, block_b, 0.10, True, f'block_b{i + 1}')

    # Mixed_7a (Reduction-B).
    b0 = cbr(256, 1, name='mixed7a_b0_0')(x, train)
    b0 = cbr(384, 3, 2, valid, name='mixed7a_b0_1')(b0, train)
    b1 = cbr(256, 1, name='mixed7a_b1_0')(x, train)
    b1 = cbr(288, 3, 2, valid, name='mixed7a_b1_1')(b1, train)
    b2 = cbr(256, 1, name='mixed7a_b2_0')(x, train)
    b2 = cbr(288, 3, name='mixed7a_b2_1')(b2, train)
    b2 = cbr(320, 3, 2, valid, name='mixed7a_b2_2')(b2, train)
    x = jnp.concatenate([b0, b1, b2, maxpool(x)], axis=-1)

    block_c = (((192, 1),), ((192, 1), (224, (1, 3)), (256, (3, 1))))
    for i in range(self.repeats[2]):
      last = i == self.repeats[2] - 1
      x = residual(x, block_c, 1.0 if last else 0.20, not last, f'block_c{i + 1}')

    x = cbr(1536, 1, name='conv_7b')(x, train)
    return self._head(x, train)
