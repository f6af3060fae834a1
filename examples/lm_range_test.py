r"""Range test of a byte-level transformer language model trained with AdamW, read on held-out
loss, then the 1cycle run it configures.

The corpus is the Python standard library's own source (`TRAIN_FILES`, `HELD_OUT_FILES`, read
from the running interpreter's `Lib/`): it is on every machine that runs Python, offline, under
one licence, and it is real mixed text (code, English docstrings and comments), so a byte-level
model has something to learn at every scale. The held-out loss is read on modules the model
never trains on. (The files differ a little between Python versions, and so do the numbers.)

  python examples/lm_range_test.py --out /tmp/lm_range          # sweep, then a 1cycle run
  python examples/lm_range_test.py --toy                        # seconds: what the tests run

Nothing here is superconv's own training: the model, the loss and the batches are the user's;
`lr_range.find` sweeps them, and `result.schedules` gives the run's optax schedules.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sysconfig
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from superconv import lr_range

# Large, stable modules of different styles; the held-out ones are never trained on.
TRAIN_FILES = ('argparse.py', 'difflib.py', 'inspect.py', 'textwrap.py', 'typing.py',
               'dataclasses.py', 'functools.py', 'tarfile.py', 'shutil.py', 'subprocess.py')
HELD_OUT_FILES = ('calendar.py', 'ftplib.py')


def read_corpus(files, max_bytes: int | None = None) -> np.ndarray:
  """The bytes of these standard-library files, concatenated (uint8), at most `max_bytes`."""
  lib = sysconfig.get_paths()['stdlib']
  data = b''.join(open(os.path.join(lib, f), 'rb').read() for f in files)
  return np.frombuffer(data[:max_bytes], np.uint8)


@dataclasses.dataclass(frozen=True)
class Size:
  dim: int = 64
  layers: int = 2
  heads: int = 4
  length: int = 64      # bytes of context
  batch: int = 32


class Block(nn.Module):
  dim: int
  heads: int

  @nn.compact
  def __call__(self, x):
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
    x = x + nn.SelfAttention(self.heads, qkv_features=self.dim)(nn.LayerNorm()(x), mask=mask)
    h = nn.Dense(4 * self.dim)(nn.LayerNorm()(x))
    return x + nn.Dense(self.dim)(nn.gelu(h))


class ByteLM(nn.Module):
  """A pre-norm causal transformer over bytes (vocabulary 256), learned positions."""
  size: Size

  @nn.compact
  def __call__(self, tokens):
    s = self.size
    pos = self.param('pos', nn.initializers.normal(0.02), (s.length, s.dim))
    x = nn.Embed(256, s.dim)(tokens) + pos[:tokens.shape[1]]
    for _ in range(s.layers):
      x = Block(s.dim, s.heads)(x)
    return nn.Dense(256)(nn.LayerNorm()(x))


def windows(data: np.ndarray, size: Size, seed: int, count: int | None = None):
  """Random (x, y) byte windows: y is x shifted by one. Endless unless `count`."""
  rng = np.random.default_rng(seed)
  i = 0
  while count is None or i < count:
    start = rng.integers(0, len(data) - size.length - 1, size.batch)
    w = data[start[:, None] + np.arange(size.length + 1)].astype(np.int32)
    yield {'x': w[:, :-1], 'y': w[:, 1:]}
    i += 1


def make_fns(model: ByteLM):
  def loss_fn(params, state, batch, key):
    del key
    logits = model.apply({'params': params}, batch['x'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']).mean()
    return loss, (state, {})

  def eval_fn(params, state, batch):
    del state
    logits = model.apply({'params': params}, batch['x'])
    return {'loss': optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']).mean()}
  return loss_fn, eval_fn


def setup(size: Size, max_bytes: int | None = None, eval_batches: int = 8):
  model = ByteLM(size)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size.length), jnp.int32))['params']
  train, held = read_corpus(TRAIN_FILES, max_bytes), read_corpus(HELD_OUT_FILES, max_bytes)
  held_out = list(windows(held, size, seed=12345, count=eval_batches))
  return model, params, train, held_out


def sweep(size: Size, *, num_steps: int, repeats: int, run_steps: int,
          max_bytes: int | None = None, eval_every: int = 10, eval_batches: int = 8,
          min_lr: float = 1e-5, max_lr: float = 1.0) -> lr_range.RangeTestResult:
  """The range test: AdamW's LR min_lr -> max_lr (exponential), read on the held-out loss of
  `eval_batches` batches every `eval_every` updates; `repeats` data orders."""
  model, params, train, held_out = setup(size, max_bytes, eval_batches)
  loss_fn, eval_fn = make_fns(model)
  return lr_range.find(
      loss_fn, params, optax.adamw, lambda seed: windows(train, size, seed=1000 + seed),
      eval_fn=eval_fn, eval_batches=held_out, metric='loss', min_lr=min_lr, max_lr=max_lr,
      num_steps=num_steps, eval_every_steps=eval_every, repeats=repeats,
      run_steps=run_steps, run_eval_every=0,
      identity={'model': f'ByteLM(dim={size.dim}, layers={size.layers})'})


def train(size: Size, lr_schedule, momentum_schedule, *, steps: int, seed: int,
          max_bytes: int | None = None, eval_batches: int = 8, log_every: int = 0) -> dict:
  """A run of `steps` AdamW updates under these schedules (b1 = momentum); its held-out loss
  on `eval_batches` batches, and (`log_every`) rows of the training loss."""
  model, params, train_data, held_out = setup(size, max_bytes, eval_batches)
  loss_fn, eval_fn = make_fns(model)
  tx = optax.inject_hyperparams(optax.adamw)(learning_rate=lr_schedule,
                                             b1=momentum_schedule or 0.9)
  opt_state = tx.init(params)

  @jax.jit
  def update(params, opt_state, batch):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, {}, batch, None)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  t0, c0 = time.perf_counter(), time.process_time()
  rows = []
  for step, batch in enumerate(windows(train_data, size, seed=seed, count=steps), 1):
    params, opt_state, loss = update(params, opt_state, batch)
    if log_every and (step % log_every == 0 or step == steps):
      rows.append({'step': step, 'lr': float(lr_schedule(step - 1)),
                   'train_loss': float(loss)})
  evaluate = jax.jit(eval_fn)
  held = float(np.mean([float(evaluate(params, {}, b)['loss']) for b in held_out]))
  if rows:
    rows[-1]['eval_loss'] = held
  return {'held_out_loss': held, 'final_train_loss': float(loss), 'steps': steps,
          'wall_seconds': time.perf_counter() - t0, 'cpu_seconds': time.process_time() - c0,
          'diverged': not np.isfinite(held), 'rows': rows}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--toy', action='store_true', help='a tiny model on 20 kB, seconds')
  parser.add_argument('--steps', type=int, default=1500, help="the 1cycle run's updates")
  parser.add_argument('--sweep-steps', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default='', help='folder for lr_range.json and lr_range.png')
  a = parser.parse_args(argv)
  size, max_bytes = (Size(dim=16, layers=1, heads=2, length=16, batch=8), 20_000) if a.toy else (
      Size(), None)
  steps = 60 if a.toy else a.steps
  result = sweep(size, num_steps=30 if a.toy else a.sweep_steps,
                 repeats=1 if a.toy else a.repeats, run_steps=steps, max_bytes=max_bytes,
                 eval_every=3 if a.toy else 10)
  print(result.summary())
  if a.out:
    result.save(a.out)
  # From the reading to the run, two lines (an unreliable reading raises, naming why):
  lr, b1 = result.schedules('one_cycle', steps)
  run = train(size, lr, b1, steps=steps, seed=0, max_bytes=max_bytes)
  print(f"1cycle to max_lr {result.max_lr:.3g} over {steps} updates: held-out loss "
        f"{run['held_out_loss']:.4f} (bits per byte {run['held_out_loss'] / np.log(2):.3f})")
  return {'result': result, 'run': run}


if __name__ == '__main__':
  main()
