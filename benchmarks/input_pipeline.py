r"""Throughput of the streamed (ImageNet) input on this host: JPEG decode, random-resized crop, flip.

  python -m benchmarks.input_pipeline --threads 1 2 --out benchmarks/results/input_cpu_2core.jsonl

Writes ImageNet-sized JPEGs (default 500x375, the set's typical size, quality 90) into a temporary
image-folder tree, then times `streaming.train_iterator` (the host's part of the work) at each
thread count, and the whole `inputs_lib.StreamFeed` (reader thread, stacking, transfer to the devices)
at the largest. The figure to compare is an accelerator's training rate: a host that decodes
fewer images/s than its chips train leaves them waiting, and `data.num_threads` (or more hosts)
must make up the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import ml_collections
import numpy as np
from PIL import Image

from superconv import inputs as inputs_lib
from superconv import metrics as metrics_lib
from superconv import sharding
from superconv.data import streaming


def write_images(root: str, count: int, width: int, height: int, classes: int = 8) -> float:
  """`count` JPEGs of width x height in root/{train,val}/<class>/; returns their mean KB."""
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:height, 0:width]
  sizes = []
  for i in range(count):
    split = 'val' if i % 8 == 7 else 'train'
    folder = os.path.join(root, split, f'c{i % classes}')
    os.makedirs(folder, exist_ok=True)
    # Smooth colour fields plus noise: closer to a photograph's entropy than pure noise.
    f = rng.uniform(0.005, 0.05, 3)
    base = 127 + 100 * np.sin(f[None, None, :] * (x[..., None] + 2 * y[..., None]) + rng.uniform(0, 6, 3))
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    path = os.path.join(folder, f'{i}.jpg')
    Image.fromarray(img).save(path, quality=90)
    sizes.append(os.path.getsize(path) / 1024)
  return float(np.mean(sizes))


def stream_config(root: str, batch: int, image_size: int, threads: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      seed=0, batch_size=batch, data=dict(
          name='imagenet2012', source='files', path=root, tfds_data_dir='', mirror=True,
          mean='channel', image_size=image_size, num_threads=threads, prefetch=4,
          eval_batch_size=batch)))


def time_iterator(config, batches: int) -> float:
  """Images/s of the host iterator alone (one warm-up batch not counted)."""
  it = streaming.train_iterator(config.data, batch_size=config.batch_size, seed=config.seed,
                                process_index=0, process_count=1,
                                num_threads=config.data.num_threads)
  next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - t
  it.close()
  return batches * config.batch_size / seconds


def time_feed(config, batches: int) -> float:
  """Images/s of the whole StreamFeed (reader thread, stacking, device transfer), devices idle."""
  feed = inputs_lib.StreamFeed(config, sharding.make_mesh(), start_step=0, k=1)
  jax.block_until_ready(next(feed)['images'])
  t = time.perf_counter()
  for _ in range(batches):
    b = next(feed)
  jax.block_until_ready(b['images'])
  seconds = time.perf_counter() - t
  feed.close()
  return batches * config.batch_size / seconds


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--images', type=int, default=512, help='JPEGs written (7/8 train)')
  p.add_argument('--width', type=int, default=500)
  p.add_argument('--height', type=int, default=375)
  p.add_argument('--image-size', type=int, default=224, help='side of the training crops')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--batches', type=int, default=8, help='timed batches per measurement')
  p.add_argument('--threads', type=int, nargs='+', default=[1, 2])
  p.add_argument('--out', default='', help='append one JSON line per measurement here')
  args = p.parse_args(argv)

  with tempfile.TemporaryDirectory() as root:
    kb = write_images(root, args.images, args.width, args.height)
    rows = []
    for threads in args.threads:
      cfg = stream_config(root, args.batch, args.image_size, threads)
      rows.append({'what': 'train_iterator', 'threads': threads,
                   'images_per_sec': time_iterator(cfg, args.batches)})
    cfg = stream_config(root, args.batch, args.image_size, max(args.threads))
    rows.append({'what': 'StreamFeed', 'threads': max(args.threads),
                 'images_per_sec': time_feed(cfg, args.batches)})

  common = {'jpeg': f'{args.width}x{args.height}', 'jpeg_kb': round(kb, 1),
            'crop': args.image_size, 'batch': args.batch, 'batches': args.batches,
            'cpu_count': os.cpu_count(), **metrics_lib.provenance()}
  one = rows[0]['images_per_sec'] if rows[0]['threads'] == 1 else None
  for r in rows:
    r.update(common)
    scale = f'  ({r["images_per_sec"] / one:.2f}x one thread)' if one else ''
    print(f'{r["what"]:>15} {r["threads"]:>2} threads: {r["images_per_sec"]:8.1f} images/s{scale}')
  if args.out:
    os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
    with open(args.out, 'a') as f:
      for r in rows:
        f.write(json.dumps(r) + '\n')


if __name__ == '__main__':
  main()
