"""Per-host streaming for data sets too large to hold in memory (ImageNet).

The order is the same endless stream as `pipeline.batch_indices`: position p = step * B + j reads
perm_e[p mod N], e = p // N, perm_e a seeded permutation per epoch. Host i of P reads only the
slice j in [i B/P, (i+1) B/P) of every global batch, so the hosts' reads are disjoint, together
cover each epoch exactly once, and the global batch at a step does not depend on P. Each example's
crop and flip come from a generator seeded with (seed, p): the stream is a pure function of
(seed, step), so a run resumed at `start_step` continues exactly.

Images leave the host as uint8 (a quarter of float32's transfer); the device subtracts the mean
(`pipeline.preprocess_eval`, e.g. with `IMAGENET_MEAN_RGB`).

In training (`train.StreamFeed`): `train_iterator` -> `stack` (k updates per dispatch) ->
`in_background` (decoding runs ahead in a thread) -> `prefetch_to_device` (each host's part placed
on its devices as one global array).
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import math
import pathlib
import queue as queue_lib
import threading
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from superconv.data import sources
from superconv.data.sources import DataError

__all__ = ['IMAGENET_MEAN_RGB', 'ImageFolderSource', 'ArraySource', 'open_source', 'mean_rgb',
           'image_size', 'random_resized_crop', 'center_crop', 'train_iterator', 'eval_batch_size',
           'eval_iterator', 'stack', 'in_background', 'prefetch_to_device']

IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)  # per-channel train mean on the 0-255 scale


class ImageFolderSource:
  """Random access to `root/<split>/<class>/<image>`, records like a tfds data source's."""

  def __init__(self, root: str | pathlib.Path, split: str):
    root = pathlib.Path(root).expanduser()
    names = ('train',) if split == 'train' else sources.TEST_ALIASES
    split_dir = next((root / s for s in names if (root / s).is_dir()), None)
    missing = [n for n, d in (('train', root / 'train'), ('/'.join(names), split_dir))
               if d is None or not d.is_dir()]
    if missing:
      raise DataError(f'{root}: expected image folders {{train,val}}/<class>/<image> for '
                      f'streaming, found no {missing[0]} folder')
    classes = sorted(d.name for d in (root / 'train').iterdir() if d.is_dir())
    label_of = {c: i for i, c in enumerate(classes)}
    self.files = sorted(p for p in split_dir.glob('*/*')
                        if p.suffix.lower() in sources.IMAGE_EXTENSIONS)
    if not self.files:
      raise DataError(f'{split_dir}: no images')
    try:
      self.labels = np.asarray([label_of[p.parent.name] for p in self.files], np.int32)
    except KeyError as e:
      raise DataError(f'{split_dir}: class folder {e} has no train folder') from e

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> dict[str, Any]:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    try:
      with Image.open(self.files[i]) as im:
        image = np.asarray(im.convert('RGB'))
    except sources.decode_errors() as e:
      raise DataError(f'cannot decode image {self.files[i]} ({e})') from e
    return {'image': image, 'label': self.labels[i]}


class ArraySource:
  """Random access to in-memory arrays (the generated 'fake' split of a streamed set)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {'image': self.images[i], 'label': self.labels[i]}


def open_source(data_cfg: Any, split: str) -> Sequence[dict[str, Any]]:
  """A random-access source of {'image': uint8 [h, w, 3], 'label'} records."""
  if data_cfg.source == 'fake':
    count = data_cfg.fake_num_train if split == 'train' else data_cfg.fake_num_test
    return ArraySource(*sources.fake_split(data_cfg.name, split, count))
  if data_cfg.source == 'files':
    return ImageFolderSource(data_cfg.path, split)
  if data_cfg.source == 'tfds':
    tfds_split = 'validation' if (data_cfg.name == 'imagenet2012' and split == 'test') else split
    return sources.tfds_data_source(data_cfg.name, tfds_split, data_cfg.get('tfds_data_dir', ''))
  raise DataError(f"streaming reads data.source 'tfds', 'files' or 'fake', got "
                  f"{data_cfg.source!r}")


def mean_rgb(data_cfg: Any) -> np.ndarray:
  """float32 [1, 1, 3] subtracted on the device: the set's known per-channel mean ('channel') or
  zeros ('none'). A per-pixel mean image would need a pass over the whole set, so it is refused.
  """
  if data_cfg.mean == 'channel':
    return np.asarray(IMAGENET_MEAN_RGB, np.float32).reshape(1, 1, 3)
  if data_cfg.mean == 'none':
    return np.zeros((1, 1, 3), np.float32)
  raise DataError(f"a streamed data set subtracts data.mean 'channel' or 'none', got "
                  f"{data_cfg.mean!r}")


def _resize(image: np.ndarray, size: int, box: tuple[int, int, int, int]) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  im = Image.fromarray(image.reshape(image.shape[:2]) if image.shape[-1] == 1 else image)
  return np.asarray(im.convert('RGB').resize((size, size), Image.BILINEAR, box=box))


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                        area: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """Inception crop: a box of area fraction U(area), aspect log-U(ratio), resized to size^2.

  Up to 10 draws; if none fits, the whole image.
  """
  h, w = image.shape[:2]
  for _ in range(10):
    target = h * w * rng.uniform(*area)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
      return _resize(image, size, (x0, y0, x0 + cw, y0 + ch))
  return _resize(image, size, (0, 0, w, h))


def center_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
  """The central square of side crop_fraction * min(h, w), resized to size^2 (standard eval)."""
  h, w = image.shape[:2]
  side = max(1, round(min(h, w) * crop_fraction))
  y0, x0 = (h - side) // 2, (w - side) // 2
  return _resize(image, size, (x0, y0, x0 + side, y0 + side))


def image_size(data_cfg: Any) -> int:
  """Side of the square crops fed to the model: data.image_size, or the dataset's."""
  return int(data_cfg.get('image_size', 0) or sources.image_shape(data_cfg.name)[0])


def train_iterator(data_cfg: Any, *, batch_size: int, seed: int, process_index: int,
                   process_count: int, start_step: int = 0, num_threads: int = 8,
                   source: Sequence[dict[str, Any]] | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
  """This host's share of every training batch from `start_step` on, endlessly.

  Yields dict(image uint8 [B/P, S, S, 3], label int32 [B/P]) with B = `batch_size` (global),
  P = process_count, S = data_cfg.image_size (default: the dataset's image_shape). Example
  positions are shuffled per epoch from `seed` (the run's). Random-resized crop, then a
  horizontal flip with probability 1/2 if data_cfg.mirror. `source` (default:
  `open_source(data_cfg, 'train')`) lets a caller open it once.
  """
  batch = batch_size
  if batch % process_count:
    raise ValueError(f'batch_size {batch} is not divisible by {process_count} processes')
  local = batch // process_count
  source = source if source is not None else open_source(data_cfg, 'train')
  n, size, mirror = len(source), image_size(data_cfg), data_cfg.mirror
  perms: dict[int, np.ndarray] = {}  # epoch -> permutation, only the epochs of the current batch

  def example(p: int) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng([seed, 1, p])
    record = source[int(perms[p // n][p % n])]
    image = random_resized_crop(np.asarray(record['image']), size, rng)
    if mirror and rng.random() < 0.5:
      image = image[:, ::-1]
    return image, int(record['label'])

  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:  # PIL releases the GIL
    for step in itertools.count(start_step):
      first = step * batch + process_index * local
      perms = {e: perms[e] if e in perms else np.random.default_rng([seed, 0, e]).permutation(n)
               for e in range(first // n, (first + local - 1) // n + 1)}
      out = list(pool.map(example, range(first, first + local)))
      yield {'image': np.stack([o[0] for o in out]),
             'label': np.asarray([o[1] for o in out], np.int32)}


def eval_batch_size(data_cfg: Any, multiple_of: int) -> int:
  """data_cfg.eval_batch_size rounded up to a multiple of `multiple_of` (devices or hosts)."""
  return -(-data_cfg.eval_batch_size // multiple_of) * multiple_of


def eval_iterator(data_cfg: Any, *, process_index: int, process_count: int, num_threads: int = 8,
                  multiple_of: int = 1, source: Sequence[dict[str, Any]] | None = None
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This host's share of the test split, in order, once: dict(image, label, mask).

  Global batches of data_cfg.eval_batch_size rounded up to a multiple of P and of
  `multiple_of` (the device count); the last is padded (mask False), and every host yields the
  same number of batches.
  """
  source = source if source is not None else open_source(data_cfg, 'test')
  n, size = len(source), image_size(data_cfg)
  batch = eval_batch_size(data_cfg, math.lcm(process_count, multiple_of))
  local = batch // process_count

  def example(i: int) -> tuple[np.ndarray, int]:
    if i >= n:
      return np.zeros((size, size, 3), np.uint8), 0
    record = source[i]
    return center_crop(np.asarray(record['image']), size), int(record['label'])

  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    for start in range(0, n, batch):
      ids = range(start + process_index * local, start + (process_index + 1) * local)
      out = list(pool.map(example, ids))
      yield {'image': np.stack([o[0] for o in out]),
             'label': np.asarray([o[1] for o in out], np.int32),
             'mask': np.asarray([i < n for i in ids])}


def stack(iterator: Iterator[dict[str, np.ndarray]], k: int) -> Iterator[dict[str, np.ndarray]]:
  """Groups k consecutive batches into one with a leading axis of k (k updates per dispatch)."""
  while True:
    group = list(itertools.islice(iterator, k))
    if len(group) < k:
      return
    yield {key: np.stack([b[key] for b in group]) for key in group[0]}


def in_background(iterator: Iterator[Any], size: int) -> Iterator[Any]:
  """Runs `iterator` in a thread, `size` items ahead of the consumer.

  So decoding goes on while the main thread waits on the device (a log row's fetch, an
  evaluation). An exception in the thread is raised in the consumer at the item it stopped at.
  Closing the returned generator stops the thread.
  """
  items: queue_lib.Queue = queue_lib.Queue(maxsize=max(size, 1))
  stop = threading.Event()
  done = object()

  def produce():
    try:
      for item in iterator:
        while not stop.is_set():
          try:
            items.put(item, timeout=0.1)
            break
          except queue_lib.Full:
            continue
        if stop.is_set():
          return
      items.put(done)
    except BaseException as e:  # pylint: disable=broad-except
      items.put(e)
    finally:
      close = getattr(iterator, 'close', None)
      if close is not None:  # a generator's `with` blocks (its thread pool) end here
        close()

  thread = threading.Thread(target=produce, daemon=True, name='superconv-input')
  thread.start()
  try:
    while True:
      item = items.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    while thread.is_alive():  # unblock a producer waiting on a full queue
      try:
        items.get_nowait()
      except queue_lib.Empty:
        pass
      thread.join(timeout=0.1)


def prefetch_to_device(iterator: Iterator[Any], size: int,
                       sharding: jax.sharding.Sharding) -> Iterator[Any]:
  """Keeps `size` batches in flight: each host's batch becomes its part of a global jax.Array.

  `jax.make_array_from_process_local_data` starts the transfer asynchronously, so the host
  prepares batch s + size while the device trains on batch s.
  """
  put = lambda b: jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), b)
  iterator = iter(iterator)
  queue = collections.deque(put(b) for b in itertools.islice(iterator, size))
  while queue:
    yield queue.popleft()
    queue.extend(put(b) for b in itertools.islice(iterator, 1))
