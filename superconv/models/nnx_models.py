"""Models written in Flax NNX, registered beside the Linen ones.

An NNX module is built eagerly, with its weights, so the registry hands out an `NnxSpec`: the
class and its arguments, built by the trainer from the run's key and the input shape
(`superconv.model_adapter` is the only code that calls it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class NnxSpec:
  """An NNX model not yet built: `cls(in_shape, **kwargs, rngs=nnx.Rngs(key))`.

  `in_shape` is one example's (H, W, C): NNX layers are sized when they are made.
  """
  cls: type
  kwargs: tuple[tuple[str, Any], ...] = ()

  def build(self, key: jax.Array, in_shape: tuple[int, ...]) -> nnx.Module:
    return self.cls(tuple(in_shape), **dict(self.kwargs), rngs=nnx.Rngs(key))


class NnxLeNet(nnx.Module):
  """Caffe LeNet's layers in NNX, with BatchNorm after each conv and dropout before the head.

  conv5x5(20) -> BN -> relu -> maxpool2 -> conv5x5(50) -> BN -> relu -> maxpool2 -> fc500 ->
  relu -> dropout -> fc(num_classes); 'VALID' convolutions as Caffe's. An example of an NNX
  model trained through superconv's step (its Param, BatchStat and RNG state), not a paper
  network. For 28x28x1 inputs and 10 classes: 431,220 parameters (LeNet's 431,080 plus BN's
  scale and bias, 2 x (20 + 50)).
  """

  def __init__(self, in_shape: tuple[int, int, int], num_classes: int = 10,
               dropout_rate: float = 0.0, *, rngs: nnx.Rngs):
    h, w, c = in_shape
    self.conv1 = nnx.Conv(c, 20, (5, 5), padding='VALID', rngs=rngs)
    self.bn1 = nnx.BatchNorm(20, rngs=rngs)
    self.conv2 = nnx.Conv(20, 50, (5, 5), padding='VALID', rngs=rngs)
    self.bn2 = nnx.BatchNorm(50, rngs=rngs)
    side = lambda n: ((n - 4) // 2 - 4) // 2  # conv5 valid, pool2, conv5 valid, pool2
    self.fc1 = nnx.Linear(side(h) * side(w) * 50, 500, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc2 = nnx.Linear(500, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pool = lambda y: nnx.max_pool(y, (2, 2), strides=(2, 2))
    x = pool(nnx.relu(self.bn1(self.conv1(x))))
    x = pool(nnx.relu(self.bn2(self.conv2(x))))
    x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    return self.fc2(self.dropout(x)).astype(jnp.float32)
