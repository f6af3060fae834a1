"""TFDS's route, offline as far as the download: a generated archive in CIFAR-10's official format.

The network is the one thing replaced: `downloader._open_url` (where TFDS's download manager opens
a URL) serves the generated `cifar-10-binary.tar.gz` for TFDS's registered URL, and its size and
SHA-256 are registered for the test in place of the real archive's. TFDS then stores the file and
verifies it as it would a real download, and everything after that is the real code path.
"""

import contextlib
import hashlib
import importlib.util
import io
import json
import tarfile
import types

import numpy as np
import pytest

from superconv import train
from superconv.data import sources
from superconv.data.sources import DataError

tfds = pytest.importorskip('tensorflow_datasets')

URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'  # TFDS's registered CIFAR-10
CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
           'truck')
HAS_TENSORFLOW = importlib.util.find_spec('tensorflow') is not None


def cifar10_binary(per_batch: int = 4, test: int = 6, seed: int = 0):
  """(archive bytes, expected arrays): `cifar-10-batches-bin/` with `data_batch_1..5.bin`,
  `test_batch.bin` (records of 1 label byte + 3072 pixel bytes, channel-major) and
  `batches.meta.txt`, as in the published archive."""
  rng = np.random.default_rng(seed)
  buf, expected = io.BytesIO(), {}
  with tarfile.open(fileobj=buf, mode='w:gz') as tar:
    def add(name: str, data: bytes) -> None:
      info = tarfile.TarInfo(f'cifar-10-batches-bin/{name}')
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))

    for split, names, n in (('train', [f'data_batch_{i}.bin' for i in range(1, 6)], per_batch),
                            ('test', ['test_batch.bin'], test)):
      images, labels = [], []
      for name in names:
        label = rng.integers(0, 10, n, dtype=np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        add(name, np.concatenate([label[:, None], pixels], axis=1).tobytes())
        labels.append(label)
        images.append(pixels.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
      expected[split] = (np.concatenate(images), np.concatenate(labels).astype(np.int32))
    add('batches.meta.txt', ('\n'.join(CLASSES) + '\n\n').encode())
  return buf.getvalue(), expected


@pytest.fixture
def offline_cifar10(monkeypatch):
  """Serves `archive` for TFDS's CIFAR-10 URL (any other URL: no network) and registers its
  size and checksum; returns a function taking the archive bytes."""
  from tensorflow_datasets.core.download import checksums  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.download import downloader  # pylint: disable=g-import-not-at-top
  served = {}

  @contextlib.contextmanager
  def open_url(url, **kwargs):
    del kwargs
    if url not in served:
      raise ConnectionError(f'no network in this test ({url})')
    response = types.SimpleNamespace(url=url, headers={'Content-length': str(len(served[url]))})
    yield response, iter([served[url]])

  monkeypatch.setattr(downloader, '_open_url', open_url)
  builder_cls = tfds.builder_cls('cifar10')
  assert URL in builder_cls.url_infos  # the test stands in for the URL TFDS really fetches

  def serve(archive: bytes, registered: bytes | None = None) -> None:
    served[URL] = archive
    registered = archive if registered is None else registered
    info = checksums.UrlInfo(size=tfds.core.utils.Size(len(registered)),
                             checksum=hashlib.sha256(registered).hexdigest(),
                             filename='cifar-10-binary.tar.gz')
    monkeypatch.setattr(builder_cls, 'url_infos', {URL: info})

  return serve


def data_cfg(tmp_path, **overrides):
  import ml_collections  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(dict(
      name='cifar10', source='tfds', path='', tfds_data_dir=str(tmp_path / 'tfds'),
      cache_dir=str(tmp_path / 'cache'), check_counts=False))  # 26 examples, not the whole set
  cfg.update(overrides)
  return cfg


def as_set(images, labels) -> list:
  """Examples as a sorted list: TFDS's prepared files hold a split in its own shuffled order."""
  return sorted((int(l), x.tobytes()) for x, l in zip(images, labels))


def test_tfds_download_and_prepare_on_the_official_format(tmp_path, offline_cifar10):
  # TFDS's own prepare (array_record, the format tfds.data_source reads without TensorFlow).
  # tensorflow-datasets 4.9.10 needs TensorFlow for it: its extractor and CIFAR reader open files
  # with tf.io.gfile and its Image feature encodes PNGs with tf.image.encode_png. Without
  # TensorFlow it stops after the download, which is why superconv decodes that download itself
  # (next test); with TensorFlow it prepares the set.
  archive, expected = cifar10_binary()
  offline_cifar10(archive)
  builder = tfds.builder('cifar10', data_dir=str(tmp_path / 'tfds'), file_format='array_record')
  if not HAS_TENSORFLOW:
    with pytest.raises(Exception, match="No module named 'tensorflow'"):
      builder.download_and_prepare()
    downloads = list((tmp_path / 'tfds' / 'downloads').rglob('*cifar-10-binary*.tar.gz'))
    assert [p.read_bytes() for p in downloads] == [archive]  # downloaded and verified
    return
  builder.download_and_prepare()
  for split in ('train', 'test'):
    source = tfds.data_source('cifar10', split=split, data_dir=str(tmp_path / 'tfds'))
    records = [source[i] for i in range(len(source))]
    assert as_set([r['image'] for r in records], [r['label'] for r in records]) == as_set(
        *expected[split])


def test_tfds_route_offline_loads_the_official_archive_and_trains(tmp_path, offline_cifar10):
  archive, expected = cifar10_binary()
  offline_cifar10(archive)
  for split in ('train', 'test'):
    images, labels = sources.load_split(data_cfg(tmp_path), split)
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
    assert as_set(images, labels) == as_set(*expected[split])
  # A short training run on it, in process: the tiny ResNet config with TFDS as its source.
  from configs import resnet56  # pylint: disable=g-import-not-at-top
  c = resnet56.get_config('tiny')
  with c.unlocked():
    c.data.update(data_cfg(tmp_path))
    c.progress_bar, c.eval_every_steps, c.checkpoint_every_steps = False, 0, 0
  summary = train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert summary['steps'] == c.num_steps
  rows = [json.loads(l) for l in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  assert rows[-1]['eval_examples'] == len(expected['test'][1])
  assert all(np.isfinite(r['train_loss']) for r in rows if 'train_loss' in r)


def test_tfds_route_refuses_an_archive_that_is_not_the_registered_one(tmp_path, offline_cifar10):
  archive, _ = cifar10_binary()
  other, _ = cifar10_binary(seed=1)
  offline_cifar10(archive, registered=other)  # what arrives is not what TFDS registered
  with pytest.raises(DataError, match='through TFDS.*(checksum|Checksum)'):
    sources.load_split(data_cfg(tmp_path), 'train')
  assert not (tmp_path / 'cache').exists()


def test_tfds_route_offline_without_the_download_names_both_ways(tmp_path, offline_cifar10):
  del offline_cifar10  # nothing served: the URL fails as it does offline
  with pytest.raises(DataError) as info:
    sources.load_split(data_cfg(tmp_path), 'train')
  message = str(info.value)
  assert 'ConnectionError' in message and 'tfds_data_dir' in message
  assert '--config.data.source=files --config.data.path=PATH' in message
  assert 'cifar-10-binary.tar.gz' in message  # the local formats, with an example name


def test_tfds_route_offline_reads_mnists_four_idx_files(tmp_path, monkeypatch):
  # MNIST is four files, stored by TFDS under names derived from their URLs; they are read under
  # their own names (train-images-idx3-ubyte.gz, ...).
  import gzip  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.download import checksums  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.download import downloader  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  arrays = {'train-images-idx3-ubyte': rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
            'train-labels-idx1-ubyte': rng.integers(0, 10, 7, dtype=np.uint8),
            't10k-images-idx3-ubyte': rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
            't10k-labels-idx1-ubyte': rng.integers(0, 10, 3, dtype=np.uint8)}
  builder_cls = tfds.builder_cls('mnist')
  served, infos = {}, {}
  for url in builder_cls.url_infos:  # TFDS's four registered URLs
    name = url.rsplit('/', 1)[-1]
    array = arrays[name.removesuffix('.gz')]
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f'>{array.ndim}i', *array.shape)
    served[url] = gzip.compress(raw + array.tobytes(), mtime=0)
    infos[url] = checksums.UrlInfo(size=tfds.core.utils.Size(len(served[url])),
                                   checksum=hashlib.sha256(served[url]).hexdigest(), filename=name)

  @contextlib.contextmanager
  def open_url(url, **kwargs):
    del kwargs
    yield types.SimpleNamespace(url=url, headers={}), iter([served[url]])

  monkeypatch.setattr(downloader, '_open_url', open_url)
  monkeypatch.setattr(builder_cls, 'url_infos', infos)
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    images, labels = sources.load_split(data_cfg(tmp_path, name='mnist'), split)
    if not HAS_TENSORFLOW:  # the files' own order (TFDS's prepared files have their own)
      np.testing.assert_array_equal(images[..., 0], arrays[f'{prefix}-images-idx3-ubyte'])
      np.testing.assert_array_equal(labels, arrays[f'{prefix}-labels-idx1-ubyte'])
    assert as_set(images[..., 0], labels) == as_set(arrays[f'{prefix}-images-idx3-ubyte'],
                                                    arrays[f'{prefix}-labels-idx1-ubyte'])
