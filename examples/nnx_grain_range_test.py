r"""Range test of a Flax NNX classifier with BatchNorm, fed by a grain `DataLoader`, trained on
its own loss (label-smoothed cross-entropy), read on held-out accuracy.

The task: which of four standard-library modules (`MODULES`) a 48-byte snippet comes from.
The data is real, offline and on every machine with Python; the held-out snippets are the last
fifth of each file, never trained on.

  python examples/nnx_grain_range_test.py --out /tmp/nnx_range
  python examples/nnx_grain_range_test.py --toy                 # seconds: what the tests run

The NNX model becomes the pure functions `find` sweeps (`functional`): `nnx.split` gives the
parameters and the BatchNorm statistics as plain pytrees (`params`, `model_state`); `loss_fn`
merges them, runs the module in training mode and returns the updated statistics.
"""

from __future__ import annotations

import argparse
import os
import sysconfig

from flax import nnx
import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import optax

from superconv import lr_range

MODULES = ('argparse.py', 'tarfile.py', 'typing.py', 'calendar.py')
SNIPPET = 48


class Snippets:
  """A grain random-access source: record i is a snippet of one module and that module's index.
  `part` 'train' reads the first four fifths of each file, 'held_out' the last fifth."""

  def __init__(self, part: str, stride: int = 8, max_bytes: int | None = None):
    lib = sysconfig.get_paths()['stdlib']
    self.texts, self.index = [], []
    for label, name in enumerate(MODULES):
      data = np.frombuffer(open(os.path.join(lib, name), 'rb').read()[:max_bytes], np.uint8)
      cut = len(data) * 4 // 5
      text = data[:cut] if part == 'train' else data[cut:]
      self.texts.append(text)
      self.index += [(label, i) for i in range(0, len(text) - SNIPPET, stride)]

  def __len__(self):
    return len(self.index)

  def __getitem__(self, i):
    label, start = self.index[i]
    return {'x': self.texts[label][start:start + SNIPPET].astype(np.int32),
            'label': np.int32(label)}


def loader(source, batch_size: int, seed: int, train: bool = True):
  """grain's DataLoader over `source`, in this process: for training, shuffled by `seed`,
  endless, whole batches; for evaluation, one pass in order, the last batch partial."""
  sampler = grain.IndexSampler(num_records=len(source), shard_options=grain.NoSharding(),
                               shuffle=train, num_epochs=None if train else 1, seed=seed)
  return grain.DataLoader(data_source=source, sampler=sampler, worker_count=0,
                          operations=[grain.Batch(batch_size, drop_remainder=train)])


class SnippetNet(nnx.Module):
  """Byte embeddings, a convolution over positions with BatchNorm, pooled, two layers."""

  def __init__(self, width: int, rngs: nnx.Rngs):
    self.embed = nnx.Embed(256, width, rngs=rngs)
    self.conv = nnx.Conv(width, width, kernel_size=(5,), rngs=rngs)
    self.bn = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)  # short runs: track quickly
    self.hidden = nnx.Linear(2 * width, width, rngs=rngs)
    self.out = nnx.Linear(width, len(MODULES), rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.bn(self.conv(self.embed(x))))
    h = jnp.concatenate([h.mean(1), h.max(1)], -1)
    return self.out(nnx.relu(self.hidden(h)))


def smoothed_cross_entropy(logits, labels, smoothing: float = 0.1):
  """The classifier's own loss: cross-entropy against (1 - s) one-hot + s / K."""
  k = logits.shape[-1]
  target = optax.smooth_labels(jnp.eye(k)[labels], smoothing)
  return optax.softmax_cross_entropy(logits, target).mean()


def functional(model: nnx.Module):
  """The module as pure functions of plain pytrees: (params, stats, loss_fn, eval_fn)."""
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)

  def merged(p, s):
    # Fresh copies of the split state, filled with this call's arrays (traced under jit).
    p_state, s_state = jax.tree.map(lambda x: x, params), jax.tree.map(lambda x: x, stats)
    nnx.replace_by_pure_dict(p_state, p)
    nnx.replace_by_pure_dict(s_state, s)
    return nnx.merge(graphdef, p_state, s_state)

  def loss_fn(p, s, batch, key):
    del key
    model = merged(p, s)
    model.train()
    loss = smoothed_cross_entropy(model(batch['x']), batch['label'])
    return loss, (nnx.state(model, nnx.BatchStat).to_pure_dict(), {})

  def eval_fn(p, s, batch):
    model = merged(p, s)
    model.eval()
    logits = model(batch['x'])
    return {'accuracy': (logits.argmax(-1) == batch['label']).mean(),
            'loss': smoothed_cross_entropy(logits, batch['label'])}
  return params.to_pure_dict(), stats.to_pure_dict(), loss_fn, eval_fn


def main(argv=None) -> lr_range.RangeTestResult:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--toy', action='store_true', help='a tiny model on 6 kB per module')
  parser.add_argument('--out', default='', help='folder for lr_range.json and lr_range.png')
  parser.add_argument('--max-lr', type=float, default=None, help='default 0.3 (toy), 1.0')
  a = parser.parse_args(argv)
  width, max_bytes, steps, batch = (16, 6000, 60, 32) if a.toy else (32, None, 300, 64)
  params, stats, loss_fn, eval_fn = functional(SnippetNet(width, nnx.Rngs(0)))
  train = Snippets('train', max_bytes=max_bytes)
  held_out = list(loader(Snippets('held_out', stride=SNIPPET, max_bytes=max_bytes), 256,
                         seed=0, train=False))
  result = lr_range.find(
      loss_fn, params, lambda lr: optax.sgd(lr, momentum=0.9),
      lambda seed: loader(train, batch, seed=seed), model_state=stats, eval_fn=eval_fn,
      eval_batches=held_out, metric='accuracy', min_lr=0.0,
      max_lr=a.max_lr or (0.3 if a.toy else 1.0),
      num_steps=steps, eval_every_steps=3 if a.toy else 10, repeats=1 if a.toy else 3,
      identity={'model': 'SnippetNet', 'num_classes': len(MODULES)})
  print(result.summary())
  if a.out:
    result.save(a.out)
  return result


if __name__ == '__main__':
  main()
