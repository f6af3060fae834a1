"""Building blocks shared by the models: Caffe-style BatchNorm, initialisers and pooling.

Everything here follows Caffe semantics because the paper's networks were Caffe prototxts
(Smith & Topin 2017, `lnsmith54/super-convergence/architectures/*.prototxt`; Smith 2018,
`lnsmith54/hyperParam1`). Parameters and BN statistics are always float32; `dtype` is only the
compute dtype.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# Caffe "msra" filler: N(0, sqrt(2 / fan_in)), fan_in = k_h * k_w * C_in / groups (Caffe's
# MSRAFiller default variance_norm FAN_IN). Untruncated normal, as Caffe.
msra_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')

# Caffe "xavier" filler: U(-sqrt(3 / fan_in), +sqrt(3 / fan_in)) (XavierFiller default
# variance_norm FAN_IN). For a Dense kernel [in, out] fan_in = in.
xavier_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')


# The compute dtypes a model takes by name (parameters and BN statistics stay float32).
DTYPES = ('float32', 'bfloat16', 'float16')


def as_dtype(dtype: str | Dtype) -> Dtype:
  """'float32' | 'bfloat16' | 'float16' | a jnp dtype -> the jnp dtype (ValueError otherwise)."""
  if isinstance(dtype, str):
    if dtype not in DTYPES:
      raise ValueError(f'dtype must be one of {DTYPES}, got {dtype!r}')
    return jnp.dtype(dtype)
  return jnp.dtype(dtype)


class BatchNorm(nn.Module):
  """Caffe BatchNorm (+ Scale) with per-device statistics and optional ghost batches.

  Train mode normalizes with the statistics of the batch it is given (no cross-device
  reduction: the train step runs the model inside `shard_map`, so each device normalizes its own
  images, as each of the paper's 8 GPUs did under Caffe P2PSync). With
  `virtual_batch_size = v > 0` the local batch of B images is split into G = B / v consecutive
  groups that are normalized separately. For group g with n = v * H * W values per channel:

    mu_g = mean(x_g),   s2_g = mean((x_g - mu_g)^2)         (biased, used to normalize)
    y    = scale * (x - mu_g) / sqrt(s2_g + epsilon) + bias

  and the running statistics are Caffe's: decayed sums over a decayed count (Caffe's blobs 0-2,
  `scale_factor` being the count), fed the mean of the group statistics with the unbiased
  variance correction n / (n - 1):

    mean_sum <- m * mean_sum + avg_g(mu_g)
    var_sum  <- m * var_sum  + avg_g(s2_g) * n / (n - 1)
    count    <- m * count    + 1

  where m = `momentum` is Caffe's `moving_average_fraction`. Eval mode normalizes with
  mean_sum / count and var_sum / count: the weighted mean of the batch statistics seen so far,
  with weights m^(t-1-i), exact from the first update whatever m is. (A plain EMA started at
  mean 0 / var 1 would still carry m^t of those initial values: 90 % after 100 updates at
  m = 0.999, the PC-LR baselines' fraction.) Before any update (count 0) eval uses mean 0,
  var 1. Statistics are computed and kept in float32 whatever the input dtype. They are not
  updated while the module is being initialised, so they start at zero sums and count.

  Attributes:
    momentum: Caffe moving_average_fraction m in [0, 1).
    epsilon: added to the variance (Caffe default 1e-5).
    virtual_batch_size: images per normalization group (0: the whole local batch). Must divide
      the local batch size in train mode.
    use_scale: learn a per-channel scale (Caffe Scale layer), param 'scale'.
    use_bias: learn a per-channel shift (Scale bias_term), param 'bias'.
    dtype: output dtype (None: that of the input).

  Examples:
    >>> import jax.numpy as jnp
    >>> bn = BatchNorm(momentum=0.9)
    >>> x = jnp.array([[1.0], [3.0]])
    >>> v = bn.init(jax.random.key(0), x, train=False)
    >>> y, upd = bn.apply(v, x, train=True, mutable=['batch_stats'])
    >>> [round(float(t), 4) for t in y[:, 0]]
    [-1.0, 1.0]
    >>> stats = upd['batch_stats']  # one update: the sums hold that batch's mean and var * 2/(2-1)
    >>> [round(float(stats[k].reshape(-1)[0]), 6) for k in ('mean_sum', 'var_sum', 'count')]
    [2.0, 2.0, 1.0]
    >>> [round(float(t), 4) for t in bn.apply({**v, **upd}, x, train=False)[:, 0]]  # (x - 2) / sqrt(2)
    [-0.7071, 0.7071]
  """
  momentum: float = 0.95
  epsilon: float = 1e-5
  virtual_batch_size: int = 0
  use_scale: bool = True
  use_bias: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    f32 = jnp.float32
    # Caffe's three BN blobs: decayed sums of the batch means and variances, and their count.
    mean_sum = self.variable('batch_stats', 'mean_sum', lambda: jnp.zeros((c,), f32))
    var_sum = self.variable('batch_stats', 'var_sum', lambda: jnp.zeros((c,), f32))
    count = self.variable('batch_stats', 'count', lambda: jnp.zeros((), f32))
    xf = x.astype(f32)
    if train:
      b = x.shape[0]
      v = self.virtual_batch_size or b
      if self.is_initializing():
        v = b  # init may use a dummy batch of any size; grouping does not change params
      if v <= 0 or b % v:
        raise ValueError(
            f'virtual_batch_size={self.virtual_batch_size} must divide the per-device batch '
            f'size {b} (use 0 for the whole batch)')
      groups = xf.reshape((b // v, v) + x.shape[1:])
      axes = tuple(range(1, groups.ndim - 1))
      mean = jnp.mean(groups, axis=axes, keepdims=True)
      var = jnp.mean(jnp.square(groups - mean), axis=axes, keepdims=True)
      y = ((groups - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
      if not self.is_initializing():
        n = math.prod(groups.shape[1:-1])
        unbias = n / max(n - 1, 1)
        m = self.momentum
        mean_sum.value = m * mean_sum.value + jnp.mean(mean.reshape(-1, c), axis=0)
        var_sum.value = m * var_sum.value + unbias * jnp.mean(var.reshape(-1, c), axis=0)
        count.value = m * count.value + 1.0
    else:
      ra_mean, ra_var = running_stats({'mean_sum': mean_sum.value, 'var_sum': var_sum.value,
                                       'count': count.value})
      y = (xf - ra_mean) * jax.lax.rsqrt(ra_var + self.epsilon)
    if self.use_scale:
      y = y * self.param('scale', nn.initializers.ones, (c,), f32)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (c,), f32)
    return y.astype(self.dtype or x.dtype)


def running_stats(stats: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(mean, var) that eval uses, from one BatchNorm's `batch_stats` (Caffe: blob / scale_factor).

  mean = mean_sum / count and var = var_sum / count once count > 0; mean 0, var 1 before the
  first update (Caffe would divide by zero there).

  Examples:
    >>> import jax.numpy as jnp
    >>> s = {'mean_sum': jnp.array([3.0]), 'var_sum': jnp.array([1.5]), 'count': jnp.array(1.5)}
    >>> [float(t[0]) for t in running_stats(s)]
    [2.0, 1.0]
  """
  count = stats['count']
  seen = count > 0
  safe = jnp.where(seen, count, 1.0)
  mean = jnp.where(seen, stats['mean_sum'] / safe, 0.0)
  var = jnp.where(seen, stats['var_sum'] / safe, 1.0)
  return mean, var


def caffe_avg_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
  """Caffe AVE pooling with pad 0 on NHWC input: ceil-mode output, edge windows clipped.

  Caffe sizes the output as out = ceil((H - k) / s) + 1, so windows start at 0, s, ..., and the
  last one may run past the image; it is clipped and averaged over the pixels it covers:

    y[i, j] = sum(x[is : min(is + k, H), js : min(js + k, W)]) / (#pixels in that window)

  For the paper's ResNet shortcut (k = 3, s = 2) this maps 32 -> 16 -> 8, like the strided
  convolution beside it.

  Examples:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> caffe_avg_pool(x, 3, 2)[0, :, :, 0].tolist()
    [[5.0, 6.5], [11.0, 12.5]]
    >>> caffe_avg_pool(jnp.ones((2, 32, 32, 3)), 3, 2).shape
    (2, 16, 16, 3)
  """
  h, w = x.shape[1:3]

  def counts(size: int) -> tuple[int, np.ndarray]:
    out = -(-(size - window) // stride) + 1
    starts = np.arange(out) * stride
    return out, np.minimum(starts + window, size) - starts

  out_h, count_h = counts(h)
  out_w, count_w = counts(w)
  pad_h = (out_h - 1) * stride + window - h
  pad_w = (out_w - 1) * stride + window - w
  summed = jax.lax.reduce_window(
      x, np.zeros((), x.dtype), jax.lax.add, (1, window, window, 1), (1, stride, stride, 1),
      ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  divisor = np.outer(count_h, count_w).astype(np.float32)[None, :, :, None]
  return summed / jnp.asarray(divisor, x.dtype)


def conv(features: int, kernel: int, stride: int = 1, *, pad: int | None = None,
         use_bias: bool = True, groups: int = 1, dtype: Dtype = jnp.float32,
         kernel_init=msra_init, name: str | None = None) -> nn.Conv:
  """A Caffe-style convolution: symmetric zero padding `pad` (default (kernel - 1) // 2).

  Caffe pads symmetrically, so a 3x3 stride-2 conv with pad 1 samples centres 0, 2, 4, ...
  ('SAME' in XLA would pad only at the end and sample 1, 3, 5, ...).
  """
  p = (kernel - 1) // 2 if pad is None else pad
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((p, p), (p, p)),
                 use_bias=use_bias, feature_group_count=groups, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=kernel_init,
                 bias_init=nn.initializers.zeros, name=name)


def dense(features: int, *, dtype: Dtype = jnp.float32, kernel_init=xavier_init,
          name: str | None = None) -> nn.Dense:
  """Caffe InnerProduct: xavier weights, zero bias, float32 params."""
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=kernel_init,
                  bias_init=nn.initializers.zeros, name=name)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """Mean over H and W, in float32: [B, H, W, C] -> [B, C]."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def dropout(x: jax.Array, rate: float, train: bool, name: str | None = None) -> jax.Array:
  """Dropout (rng stream 'dropout') when training with rate > 0, else the identity.

  Call it from inside a compact `__call__`: the nn.Dropout it creates belongs to that module.
  """
  if rate <= 0.0 or not train:
    return x
  return nn.Dropout(rate, deterministic=False, name=name)(x)


def param_count(params: Any) -> int:
  """Total number of scalars in a parameter pytree (arrays or ShapeDtypeStructs).

  Examples:
    >>> param_count({'a': jnp.zeros((3, 4)), 'b': {'c': jnp.zeros(5)}})
    17
  """
  return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))
