"""In-memory datasets for the jitted train step: all randomness is a pure function of (key, step).

The whole train split lives on the device as uint8. At update `s` the step computes

  indices = batch_indices(order_key, s, B, N)                 which examples
  aug     = draw_augmentation(fold_in(aug_key, s), B, ...)    which flips and crops
  x       = apply_augmentation(images[indices], aug, ...)     the float batch

for the *global* batch of B examples; each device then takes its slice. Nothing depends on host
state, so a run restored at step s sees exactly the batches it would have seen, and 1 device and
8 devices see the same images.

Preprocessing follows Caffe's CIFAR examples (Smith & Topin 2017, digest §5.1): random mirror,
crop 32 of 32 (so no translation), per-pixel mean image subtraction, raw 0-255 scale.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from superconv.data import sources
from superconv.data.sources import DataError

__all__ = ['InMemoryData', 'load', 'compute_mean', 'subset_indices', 'batch_indices',
           'draw_augmentation', 'apply_augmentation', 'preprocess_eval', 'eval_batches']


@dataclasses.dataclass
class InMemoryData:
  """Both splits as host numpy arrays plus the mean image subtracted from every input."""
  train_images: np.ndarray   # uint8 [N, H, W, C]
  train_labels: np.ndarray   # int32 [N]
  test_images: np.ndarray    # uint8 [M, H, W, C]
  test_labels: np.ndarray    # int32 [M]
  mean: np.ndarray           # float32 [H, W, C]
  num_classes: int
  name: str


def load(data_cfg: Any, *, eval_split: str = 'test', eval_examples: int = 0,
         eval_seed: int = 0) -> InMemoryData:
  """Loads `data_cfg` (a config's `data`) into memory: the full train split's mean, then the
  train subset.

  As in the paper's reduced-data runs (digest §2.2), the mean is computed on the full training
  set even when `data.train_subset` keeps fewer examples.

  The evaluation split (what `test_images` holds) is the test split (`eval_split='test'`; with
  `eval_examples` > 0 a fixed class-balanced draw of that many), or, for `'validation'`,
  `eval_examples` training examples held out (a class-balanced draw with `eval_seed`, the same
  for every run seed) and removed from training. With `data.train_subset` they are held out from
  the training examples the subset leaves out, so the subset trained on is the run's own.
  """
  if eval_split not in ('test', 'validation'):
    raise ValueError(f"eval_split must be 'test' or 'validation', got {eval_split!r}")
  d = data_cfg
  train_x, train_y = sources.load_split(d, 'train')
  k = sources.num_classes(d.name)
  mean = compute_mean(train_x, d.mean)
  keep = np.arange(len(train_y))
  if d.train_subset:
    keep = subset_indices(train_y, d.train_subset, seed=d.subset_seed, num_classes=k)
  if eval_split == 'validation':
    if eval_examples < 1:
      raise DataError('a validation split held out of the training set needs its size '
                      f'(lr_range.eval_examples), got {eval_examples}')
    pool = np.setdiff1d(np.arange(len(train_y)), keep) if d.train_subset else keep
    pick = pool[subset_indices(train_y[pool], eval_examples, seed=eval_seed, num_classes=k,
                               field='lr_range.eval_examples')]
    test_x, test_y = train_x[pick], train_y[pick]
    if not d.train_subset:
      keep = np.setdiff1d(keep, pick)
  else:
    test_x, test_y = sources.load_split(d, 'test')
    if eval_examples and eval_examples < len(test_y):
      pick = subset_indices(test_y, eval_examples, seed=eval_seed, num_classes=k,
                            field='lr_range.eval_examples')
      test_x, test_y = test_x[pick], test_y[pick]
  if len(keep) < len(train_y):
    train_x, train_y = train_x[keep], train_y[keep]
  return InMemoryData(train_x, train_y, test_x, test_y, mean, k, d.name)


def compute_mean(images: np.ndarray, kind: str) -> np.ndarray:
  """The float32 [H, W, C] image subtracted from every input.

  'pixel': the mean image, mean_n x[n, h, w, c] (Caffe's `mean_file`); 'channel': the mean over
  examples and positions of each channel, broadcast to [H, W, C]; 'none': zeros.

  Examples:
    >>> x = np.array([[[[0], [2]]], [[[4], [6]]]], np.uint8)  # 2 images of 1x2x1
    >>> compute_mean(x, 'pixel')[..., 0].tolist(), compute_mean(x, 'channel')[..., 0].tolist()
    ([[2.0, 4.0]], [[3.0, 3.0]])
  """
  if kind == 'pixel':
    mean = images.mean(axis=0, dtype=np.float64)
  elif kind == 'channel':
    mean = np.broadcast_to(images.mean(axis=(0, 1, 2), dtype=np.float64), images.shape[1:])
  elif kind == 'none':
    mean = np.zeros(images.shape[1:])
  else:
    raise ValueError(f"data.mean must be 'pixel', 'channel' or 'none', got {kind!r}")
  return np.ascontiguousarray(mean, np.float32)


def subset_indices(labels: np.ndarray, n: int, *, seed: int, num_classes: int,
                   field: str = 'data.train_subset') -> np.ndarray:
  """A fixed draw of `n` training examples (sorted indices), the same for every run with `seed`.

  Class-balanced (n / num_classes of each class, without replacement) when `num_classes` divides
  `n`, otherwise uniform without replacement. How the paper drew its subsets is unknown (digest
  §2.2); balanced draws make the 10k..40k rows comparable across seeds.
  """
  if n > len(labels):
    raise DataError(f'{field}={n} exceeds the {len(labels)} examples it draws from')
  rng = np.random.default_rng(seed)
  if n % num_classes:
    return np.sort(rng.choice(len(labels), n, replace=False))
  per_class = n // num_classes
  chosen = []
  for k in range(num_classes):
    members = np.flatnonzero(labels == k)
    if len(members) < per_class:
      raise DataError(f'{field}={n} needs {per_class} examples of class {k}, the '
                      f'examples it draws from have {len(members)}')
    chosen.append(rng.choice(members, per_class, replace=False))
  return np.sort(np.concatenate(chosen))


def batch_indices(key: jax.Array, step: jax.Array | int, batch_size: int,
                  num_examples: int) -> jax.Array:
  """Indices of the global batch at `step`: epochs of fresh permutations, read in order.

  Position p = step * B + j (j < B) of the endless example stream reads
  perm_e[p mod N] with e = p // N and perm_e = permutation(fold_in(key, e), N). So every
  example appears exactly once per epoch, each epoch has its own order, and a batch that crosses
  an epoch boundary (or B > N) takes the tail of one permutation and the head of the next.

  The arithmetic is split as step = q N + r, so p never overflows int32 for any step as long as
  (N + 1) B < 2^31. Cost: ceil((B - 1) / N) + 1 permutations of N per step (two when B <= N + 1),
  each a sort of N keys: negligible for N <= 60k next to a ResNet step.

  Args:
    key: PRNG key of the data order (the same for the whole run).
    step: update index, may be traced (int32 scalar).
    batch_size: B, global batch (static).
    num_examples: N, examples in the split (static).

  Returns:
    int32 [B] indices into the split.

  Examples:
    >>> key = jax.random.key(0)
    >>> epoch = jnp.concatenate([batch_indices(key, s, 4, 8) for s in (0, 1)])
    >>> sorted(epoch.tolist())
    [0, 1, 2, 3, 4, 5, 6, 7]
  """
  if batch_size < 1 or num_examples < 1:
    raise ValueError(f'batch_size and num_examples must be >= 1, got {batch_size}, {num_examples}')
  n, b = num_examples, batch_size
  step = jnp.asarray(step, jnp.int32)
  q, r = step // n, step % n
  local = r * b + jnp.arange(b, dtype=jnp.int32)  # p - q N B, < (N + 1) B
  first = (r * b) // n                            # epoch of the batch's first position, minus q B
  num_perms = (b + n - 2) // n + 1                # epochs a window of B positions can touch
  epochs = q * b + first + jnp.arange(num_perms, dtype=jnp.int32)
  perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n))(epochs)
  return perms[local // n - first, local % n].astype(jnp.int32)


def draw_augmentation(key: jax.Array, batch_size: int, *, mirror: bool,
                      crop_padding: int) -> dict[str, jax.Array]:
  """Random flips and crop offsets for a global batch.

  Returns dict(flip bool [B], dy int32 [B], dx int32 [B]), offsets uniform in [0, 2 pad]
  (pad = no shift). Draw with `fold_in(aug_key, step)` and slice per device: the slices of one
  draw are what every device count sees.
  """
  kf, ky, kx = jax.random.split(key, 3)
  if mirror:
    flip = jax.random.bernoulli(kf, 0.5, (batch_size,))
  else:
    flip = jnp.zeros((batch_size,), bool)
  span = 2 * crop_padding + 1
  dy = jax.random.randint(ky, (batch_size,), 0, span, jnp.int32)
  dx = jax.random.randint(kx, (batch_size,), 0, span, jnp.int32)
  return {'flip': flip, 'dy': dy, 'dx': dx}


def apply_augmentation(images: jax.Array, aug: dict[str, jax.Array], *, mean: jax.Array,
                       scale: float, crop_padding: int, dtype: Any = jnp.float32) -> jax.Array:
  """Mean subtraction, scaling, mirror and pad-and-crop of a uint8 batch, vectorised.

  x = scale * (images - mean), then for example i: flipped left-right if flip[i], then zero-padded
  by `crop_padding` on each side and cropped back to H x W at rows dy[i].., columns dx[i]..

  The mean is subtracted at each pixel's *source* position before the flip, as Caffe's
  DataTransformer does. Padding comes after mean subtraction, so the border is the mean colour
  in pixel space (zero input), the usual convention for pad-and-crop.

  Args:
    images: uint8 [b, H, W, C].
    aug: this batch's slice of `draw_augmentation`'s dict (each leaf [b]).
    mean: float32 [H, W, C].
    scale: factor after mean subtraction (1.0 for Caffe's raw 0-255 inputs).
    crop_padding: pixels of padding (static); 0 = no crop.
    dtype: output dtype.

  Returns:
    [b, H, W, C] of `dtype`.

  Examples:
    >>> img = jnp.arange(6, dtype=jnp.uint8).reshape(1, 2, 3, 1)    # rows [0 1 2], [3 4 5]
    >>> aug = {'flip': jnp.array([True]), 'dy': jnp.array([1]), 'dx': jnp.array([2])}
    >>> out = apply_augmentation(img, aug, mean=jnp.zeros((2, 3, 1)), scale=1.0, crop_padding=1)
    >>> out[0, ..., 0].tolist()  # flipped rows [2 1 0], [5 4 3], shifted left by one, zero fill
    [[1.0, 0.0, 0.0], [4.0, 3.0, 0.0]]
  """
  x = (images.astype(jnp.float32) - mean) * scale
  x = jnp.where(aug['flip'][:, None, None, None], x[:, :, ::-1, :], x)
  if crop_padding:
    _, h, w, c = x.shape
    p = crop_padding
    x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    crop = lambda im, dy, dx: jax.lax.dynamic_slice(im, (dy, dx, 0), (h, w, c))
    x = jax.vmap(crop)(x, aug['dy'], aug['dx'])
  return x.astype(dtype)


def preprocess_eval(images: jax.Array, *, mean: jax.Array, scale: float,
                    dtype: Any = jnp.float32) -> jax.Array:
  """Test transform: scale * (images - mean), no mirror, no crop (Caffe's crop 32 of 32).

  Examples:
    >>> preprocess_eval(jnp.full((1, 1, 1, 1), 10, jnp.uint8), mean=jnp.full((1, 1, 1), 4.0),
    ...                 scale=0.5).ravel().tolist()
    [3.0]
  """
  return ((images.astype(jnp.float32) - mean) * scale).astype(dtype)


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int,
                 multiple_of: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pads a split to whole batches; `mask` marks the real examples.

  The batch size is min(batch_size, N) rounded up to a multiple of `multiple_of` (the device
  count), so every device gets an equal share; the last partial batch is padded with zero images
  (label 0, mask False) and still counted.

  Returns:
    images [nb, bs, H, W, C], labels int32 [nb, bs], mask bool [nb, bs].

  Examples:
    >>> x, y, m = eval_batches(np.zeros((5, 1, 1, 1), np.uint8), np.arange(5), 3, 2)
    >>> x.shape, y.tolist(), m.sum(1).tolist()
    ((2, 4, 1, 1, 1), [[0, 1, 2, 3], [4, 0, 0, 0]], [4, 1])
  """
  n = len(labels)
  if n == 0:
    raise ValueError('cannot evaluate on an empty split')
  bs = -(-min(batch_size, n) // multiple_of) * multiple_of
  nb = -(-n // bs)
  pad = nb * bs - n
  images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  labels = np.concatenate([np.asarray(labels, np.int32), np.zeros(pad, np.int32)])
  mask = np.arange(nb * bs) < n
  return (images.reshape((nb, bs) + images.shape[1:]), labels.reshape(nb, bs),
          mask.reshape(nb, bs))
