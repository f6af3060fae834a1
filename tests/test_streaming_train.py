"""Training on a streamed set (ImageNet): the train step on host batches, the feed, the CLI.

The streamed step must do what the in-memory step does with the same images; a streamed run must
resume exactly; the last partial evaluation batch must be counted. Data: small generated image
folders in the ImageNet layout (`train/<class>/<image>`, `val/<class>/<image>`), of varied sizes.
"""

import dataclasses
import json
import os
import pathlib
import shutil
import threading
import time

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
from PIL import Image
import pytest

from configs import resnet50_imagenet
from superconv import configure
from superconv import models
from superconv import sharding
from superconv import step as step_lib
from superconv import train
from superconv.data import pipeline
from superconv.data import streaming
import optax

from test_reliability import _assert_clean_failure as assert_clean_failure
from test_train import _rows, _tiny_problem

IMAGENET_SMOKE = 'configs/resnet50_imagenet.py:tiny'


@pytest.fixture
def cli(run_cli):
  """`cli(workdir, *overrides, env=None)`: the ImageNet smoke config, launched through conftest."""
  return lambda workdir, *extra, **kw: run_cli(
      f'--config={IMAGENET_SMOKE}', '--config.progress_bar=False', *extra, workdir=workdir, **kw)


# ------------------------------------------------------------------------------------------------
# The step


def _state(mesh, vbs=0):
  model = models.create_model('resnet8', num_classes=10, virtual_batch_size=vbs, bn_momentum=0.9)
  tx = optax.sgd(0.1, momentum=0.9)
  return model, tx, step_lib.create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 3), mesh)


def _host_batches(state, data, batch, steps):
  """The in-memory step's images at updates 0..steps-1 (no flips, no crops), as a host stream."""
  order_key = jax.random.split(jax.device_get(state.key), 3)[0]
  idx = [np.asarray(pipeline.batch_indices(order_key, s, batch, len(data['labels'])))
         for s in range(steps)]
  return {'images': np.stack([data['images'][i] for i in idx]),
          'labels': np.stack([data['labels'][i] for i in idx])}


@pytest.mark.parametrize('num_devices,steps_per_call', [(4, 2), (1, 1)])
def test_streamed_step_matches_the_in_memory_step(num_devices, steps_per_call):
  batch, steps = 16, 2
  data = _tiny_problem()
  ref_mesh = sharding.make_mesh(jax.devices()[:4])
  model, tx, state = _state(ref_mesh)
  spec = step_lib.StepSpec(batch_size=batch, mirror=False, crop_padding=0, scale=1 / 64)
  host = _host_batches(state, data, batch, steps)
  ref = step_lib.make_train_fn(model, tx, ref_mesh, spec, steps)(state,
                                                               sharding.replicate(data, ref_mesh))
  ref = jax.device_get(ref)

  # Streamed on 4 devices (2 updates per dispatch, lax.scan over the batches) or on 1 device
  # with BN groups of 4 (one update per dispatch, two dispatches).
  mesh = sharding.make_mesh(jax.devices()[:num_devices])
  model, tx, state = _state(mesh, vbs=0 if num_devices == 4 else 4)
  fn = step_lib.make_train_fn(model, tx, mesh, dataclasses.replace(spec, streamed=True),
                           steps_per_call)
  batches = NamedSharding(mesh, P(None, 'data'))
  mean = sharding.replicate(data['mean'], mesh)
  for s in range(0, steps, steps_per_call):
    chunk = {k: jax.device_put(v[s:s + steps_per_call], batches) for k, v in host.items()}
    state = fn(state, {**chunk, 'mean': mean})
  got = jax.device_get(state)
  assert int(got.step) == steps
  for a, b in zip(jax.tree.leaves((ref.params, ref.batch_stats)),
                  jax.tree.leaves((got.params, got.batch_stats))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
  np.testing.assert_allclose(got.sums['loss'], ref.sums['loss'], rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Host-side helpers


def test_stack_groups_consecutive_batches():
  batches = [{'image': np.full((2, 1), i), 'label': np.array([i, i])} for i in range(5)]
  out = list(streaming.stack(iter(batches), 2))
  assert len(out) == 2  # the incomplete last group is dropped (the stream is endless anyway)
  assert out[1]['image'].shape == (2, 2, 1) and out[1]['label'].tolist() == [[2, 2], [3, 3]]


def test_in_background_keeps_order_raises_and_stops():
  assert list(streaming.in_background(iter(range(20)), 3)) == list(range(20))

  def failing():
    yield 1
    raise ValueError('corrupt image 7')
  it = streaming.in_background(failing(), 2)
  assert next(it) == 1
  with pytest.raises(ValueError, match='corrupt image 7'):
    next(it)

  produced = []

  def endless():
    i = 0
    while True:
      produced.append(i)
      yield i
      i += 1
  before = threading.active_count()
  it = streaming.in_background(endless(), 2)
  assert [next(it) for _ in range(3)] == [0, 1, 2]
  it.close()
  assert threading.active_count() == before
  n = len(produced)
  assert n <= 3 + 2 + 1  # at most the queue's worth (2) and one in hand ahead of the consumer
  time.sleep(0.3)
  assert len(produced) == n  # and then nothing more: the thread has stopped


# ------------------------------------------------------------------------------------------------
# Config checks


@pytest.mark.parametrize('field,value,match', [
    ('mean', 'pixel', "'pixel' mean image"), ('crop_padding', 4, 'pad-and-crop'),
    ('train_subset', 1000, 'subset'), ('prefetch', 0, 'prefetch')])
def test_streamed_config_rejects_what_does_not_apply(field, value, match):
  c = resnet50_imagenet.get_config()
  with c.unlocked():
    c.data[field] = value
  with pytest.raises(configure.ConfigError, match=match):
    configure.validate(c, num_devices=1)


# ------------------------------------------------------------------------------------------------
# The CLI on image folders


def write_image_folders(root: pathlib.Path, classes=3, train_per_class=8, val_per_class=2):
  """Images of varied sizes; class k is a colour (so the streamed run has something to learn)."""
  rng = np.random.default_rng(0)
  colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
  for split, n in (('train', train_per_class), ('val', val_per_class)):
    for k in range(classes):
      d = root / split / f'n{k:08d}'
      d.mkdir(parents=True)
      for i in range(n):
        h, w = rng.integers(36, 60, 2)
        im = np.clip(np.asarray(colours[k]) + rng.normal(0, 20, (h, w, 3)), 0, 255)
        Image.fromarray(im.astype(np.uint8)).save(d / f'{i}.jpg')


def test_streamed_run_preempted_at_an_odd_update_resumes_exactly(cli, tmp_path):
  # SIGINT right after update 3 (between log rows and checkpoints) while the reader thread is
  # decoding ahead: the run saves, stops its reader and exits 0; the same command then ends
  # with exactly the rows of an uninterrupted run.
  root = tmp_path / 'imagenet'
  write_image_folders(root)
  # The CIFAR ResNet-8 (1000-way head): the stream's resume is tested, and it compiles faster.
  args = ('--config.data.source=files', f'--config.data.path={root}',
          '--config.model.name=resnet8')
  reference = str(tmp_path / 'reference')
  assert cli(reference, *args).returncode == 0
  workdir = str(tmp_path / 'run')
  result = cli(workdir, *args, env={train.SIGNAL_AT_STEP_ENV: '3:SIGINT'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Received SIGINT: saved a checkpoint at update 3 of 8' in result.stdout
  result = cli(workdir, *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from the checkpoint at update 3' in result.stderr
  assert _rows(workdir) == _rows(reference)


def test_streamed_corrupt_image_is_a_clear_error_naming_the_file(cli, tmp_path):
  # Decoded in the reader thread, raised in the training loop: one line, exit 2, no traceback.
  root = tmp_path / 'imagenet'
  write_image_folders(root)
  (root / 'train' / 'n00000001' / 'broken.jpg').write_bytes(b'not a jpeg')
  result = cli(str(tmp_path / 'run'), '--config.data.source=files',
               f'--config.data.path={root}')
  assert_clean_failure(result, 2, 'cannot decode image', 'broken.jpg')


def test_cli_streams_image_folders_and_resumes_exactly(cli, tmp_path):
  root = tmp_path / 'imagenet'
  write_image_folders(root)
  workdir = str(tmp_path / 'run')
  args = ('--config.data.source=files', f'--config.data.path={root}',
          '--config.data.eval_batch_size=4')
  result = cli(workdir, *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'imagenet2012 streamed input' in result.stderr
  rows = _rows(workdir)
  assert [r['step'] for r in rows] == [2, 4, 6, 8]
  evals = [r for r in rows if 'eval_accuracy' in r]
  # 6 validation images in batches of 4: the padded second batch still counts its 2 images.
  assert [r['eval_examples'] for r in evals] == [6, 6]
  assert all(np.isfinite(r['train_loss']) for r in rows)
  summary = json.load(open(os.path.join(workdir, 'summary.json')))
  assert summary['steps'] == 8

  # Interrupted after update 4: the stream reopens at update 4 and the run ends identically.
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '8'))
  result = cli(workdir, *args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from the checkpoint at update 4' in result.stderr
  assert _rows(workdir) == rows


def test_tfds_imagenet_streams_through_training(tmp_path):
  # The default source of the ImageNet configs: `tfds.data_source('imagenet2012')` (random
  # access, no TensorFlow), here on TFDS's mock records: 10 images per split, 1000 classes.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  c = resnet50_imagenet.get_config('tiny')
  with c.unlocked():
    c.data.source, c.data.tfds_data_dir, c.progress_bar = 'tfds', str(tmp_path / 'tfds'), False
    c.eval_every_steps = 0  # at the end only
    c.model.name = 'resnet8'  # the source is tested; the CIFAR ResNet compiles faster
  with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
    summary = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert summary['steps'] == 8
  rows = _rows(str(tmp_path / 'run'))
  assert rows[-1]['eval_examples'] == 10 and all(np.isfinite(r['train_loss']) for r in rows)


def test_input_pipeline_benchmark_runs(tmp_path, capsys):
  from benchmarks import input_pipeline  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'input.jsonl'
  input_pipeline.main(['--images', '24', '--width', '80', '--height', '60', '--image-size', '32',
                       '--batch', '8', '--batches', '1', '--threads', '1', '2', '--out', str(out)])
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(r['what'], r['threads']) for r in rows] == [
      ('train_iterator', 1), ('train_iterator', 2), ('StreamFeed', 2)]
  assert all(r['images_per_sec'] > 0 and r['jpeg'] == '80x60' for r in rows)
  assert 'StreamFeed  2 threads' in capsys.readouterr().out


def test_stream_does_not_depend_on_the_thread_count(tmp_path):
  # Each example's crop and flip come from its own (seed, position) generator and the pool keeps
  # the order, so a host with more decoding threads reads exactly the same batches.
  root = tmp_path / 'imagenet'
  write_image_folders(root)
  cfg = resnet50_imagenet.get_config('tiny')
  with cfg.unlocked():
    cfg.data.source, cfg.data.path = 'files', str(root)
  batches = []
  for threads in (1, 3):
    it = streaming.train_iterator(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed,
                                  process_index=0, process_count=1, num_threads=threads)
    batches.append([next(it) for _ in range(3)])
    it.close()
  for a, b in zip(*batches):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
