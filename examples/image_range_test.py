r"""Range test of an image classifier through `lr_range.range_test`: superconv's own LeNet (a
Flax Linen module with BatchNorm) on Fashion-MNIST, read on held-out accuracy (the paper's
rule), then the schedules of the 1cycle run it configures.

Fashion-MNIST's four IDX files are read from `--data` (default: where Debian's
`apt-get install dataset-fashion-mnist` puts them). The same sweep from the command line, on
the configs' data pipeline, is `python -m superconv.main --config=configs/lenet_fashion_mnist.py
--config.mode=lr_range --workdir=runs/lenet_range`.

  python examples/image_range_test.py --out /tmp/lenet_range
  python examples/image_range_test.py --toy                  # seconds: what the tests run
"""

from __future__ import annotations

import argparse
import gzip
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from superconv import lr_range
from superconv import models

DEFAULT_DATA = '/usr/share/datasets/fashion-mnist'


def read_idx(folder: str, split: str, limit: int | None = None):
  """(images uint8 [N, 28, 28, 1], labels int32 [N]) of 'train' or 't10k'."""
  def read(name, offset):
    with gzip.open(os.path.join(folder, name), 'rb') as f:
      return np.frombuffer(f.read(), np.uint8, offset=offset)
  images = read(f'{split}-images-idx3-ubyte.gz', 16).reshape(-1, 28, 28, 1)
  labels = read(f'{split}-labels-idx1-ubyte.gz', 8).astype(np.int32)
  return images[:limit], labels[:limit]


def main(argv=None) -> lr_range.RangeTestResult:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', default=DEFAULT_DATA)
  parser.add_argument('--toy', action='store_true', help='2000 images, 40 updates')
  parser.add_argument('--out', default='')
  a = parser.parse_args(argv)
  n, steps = (2000, 40) if a.toy else (None, 600)
  train, test = read_idx(a.data, 'train', n), read_idx(a.data, 't10k', 1000 if a.toy else None)
  model = models.create_model('lenet', num_classes=10)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)
  result = lr_range.range_test(
      model, lambda lr: optax.sgd(lr, momentum=0.9), variables, train, test, batch_size=128,
      min_lr=0.0, max_lr=0.2 if a.toy else 0.5, num_steps=steps,
      eval_every_steps=4 if a.toy else 20, scale=1 / 255, mean=np.full((28, 28, 1), 73.0),
      min_rise=0.05 if a.toy else 0.1)
  print(result.summary())
  if a.out:
    result.save(a.out)
  if result.reliable:  # the run's schedules, effective-step rule applied (two lines to train)
    lr, momentum = result.schedules('one_cycle', 12 * 60000 // 128, momentum=(0.95, 0.85))
    print(f'1cycle peak {max(float(lr(t)) for t in range(0, 5625, 25)):.4g}, '
          f'momentum {float(momentum(0)):.2f} -> {float(momentum(2531)):.2f}')
  return result


if __name__ == '__main__':
  main()
