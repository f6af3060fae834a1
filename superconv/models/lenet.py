"""Caffe's MNIST LeNet (caffe/examples/mnist/lenet_train_test.prototxt), Smith 2018 Table 2."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from superconv.models import layers

Dtype = Any


class LeNet(nn.Module):
  """conv5x5(20) -> maxpool2 -> conv5x5(50) -> maxpool2 -> fc500 -> relu -> fc(num_classes).

  No padding, no activation after the convs (as the Caffe example), xavier weights and zero
  biases everywhere. 431,080 parameters for 28x28x1 inputs and 10 classes. No BatchNorm or
  dropout: the BN/dropout options of the registry are ignored. (Caffe flattens CHW, we flatten
  HWC; this only permutes fc1's rows.)
  """
  num_classes: int = 10
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train  # no BN, no dropout
    x = x.astype(self.dtype)
    x = layers.conv(20, 5, pad=0, kernel_init=layers.xavier_init, dtype=self.dtype,
                    name='conv1')(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = layers.conv(50, 5, pad=0, kernel_init=layers.xavier_init, dtype=self.dtype,
                    name='conv2')(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(layers.dense(500, dtype=self.dtype, name='fc1')(x))
    x = layers.dense(self.num_classes, dtype=self.dtype, name='fc2')(x)
    return x.astype(jnp.float32)
