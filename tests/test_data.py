"""superconv.data: every local format, mocked tfds, every DataError, the pipeline, streaming."""

import gzip
import io
import os
import pathlib
import pickle
import struct
import tarfile
import unittest.mock
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from superconv.data import pipeline
from superconv.data import sources
from superconv.data import streaming
from superconv.data.sources import DataError

CIFAR10_ARCHIVE = pathlib.Path(__file__).resolve().parents[2] / 'shared/data/cifar10-jpeg.tar.gz'
FASHION_MNIST_DIR = pathlib.Path('/usr/share/datasets/fashion-mnist')


def data_cfg(tmp_path, **overrides) -> ml_collections.ConfigDict:
  # check_counts=False: the files below are small stand-ins, not the whole named set
  # (test_counts_* check the sizes).
  cfg = ml_collections.ConfigDict(dict(
      name='cifar10', source='files', path='', tfds_data_dir='', train_subset=0, subset_seed=0,
      mirror=True, crop_padding=0, mean='pixel', scale=1.0, eval_batch_size=8,
      fake_num_train=40, fake_num_test=20, cache_dir=str(tmp_path / 'cache'),
      check_counts=False))
  cfg.update(overrides)
  return cfg


def png_bytes(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buf, 'PNG')
  return buf.getvalue()


def image(value: int, shape=(32, 32, 3)) -> np.ndarray:
  """A distinct, asymmetric image: pixel (h, w, c) = (value + h + 2w + 3c) mod 256."""
  h, w, c = np.indices(shape)
  return ((value + h + 2 * w + 3 * c) % 256).astype(np.uint8)


# Class folders deliberately not in alphabetical creation order: labels must follow sorted names.
FOLDER_TREE = {('train', 'truck'): [0, 1, 2], ('train', 'airplane'): [10, 11, 12],
               ('test', 'truck'): [20, 21], ('test', 'airplane'): [30]}


def write_folders(root: pathlib.Path, tree=FOLDER_TREE, shape=(32, 32, 3)) -> None:
  for (split, cls), values in tree.items():
    (root / split / cls).mkdir(parents=True, exist_ok=True)
    for v in values:
      (root / split / cls / f'{v:04d}.png').write_bytes(png_bytes(image(v, shape)))


def expected_folders():
  """(train_images, train_labels, test_images, test_labels) for FOLDER_TREE: airplane=0, truck=1."""
  out = []
  for split in ('train', 'test'):
    pairs = sorted((cls, v) for (s, cls), vs in FOLDER_TREE.items() if s == split for v in vs)
    out += [np.stack([image(v) for _, v in pairs]),
            np.array([{'airplane': 0, 'truck': 1}[cls] for cls, _ in pairs])]
  return out


def load_both(cfg):
  return sources.load_split(cfg, 'train') + sources.load_split(cfg, 'test')


def assert_equal_arrays(got, expected):
  assert len(got) == len(expected)
  for g, e in zip(got, expected):
    np.testing.assert_array_equal(g, e)


# ------------------------------------------------------------------------------------------------
# Local files


def test_image_folder_directory(tmp_path):
  write_folders(tmp_path / 'data')
  got = load_both(data_cfg(tmp_path, path=str(tmp_path / 'data')))
  assert got[0].dtype == np.uint8 and got[1].dtype == np.int32
  assert_equal_arrays(got, expected_folders())


@pytest.mark.parametrize('kind', ['tar.gz', 'tgz', 'tar', 'zip'])
def test_image_folder_archives_with_top_folder(tmp_path, kind):
  write_folders(tmp_path / 'src' / 'cifar10')
  archive = tmp_path / f'data.{kind}'
  if kind == 'zip':
    with zipfile.ZipFile(archive, 'w') as zf:
      for p in sorted((tmp_path / 'src').rglob('*')):
        zf.write(p, p.relative_to(tmp_path / 'src').as_posix())
  else:
    with tarfile.open(archive, 'w:gz' if 'gz' in kind else 'w') as tar:
      tar.add(tmp_path / 'src' / 'cifar10', arcname='cifar10')
  assert_equal_arrays(load_both(data_cfg(tmp_path, path=str(archive))), expected_folders())


def test_decoded_archive_is_cached_and_invalidated_by_a_change(tmp_path):
  write_folders(tmp_path / 'src' / 'cifar10')
  archive = tmp_path / 'data.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(tmp_path / 'src' / 'cifar10', arcname='cifar10')
  cfg = data_cfg(tmp_path, path=str(archive))
  first = load_both(cfg)
  assert len(list((tmp_path / 'cache').glob('*.npz'))) == 1
  with unittest.mock.patch.object(sources, '_decode_files', side_effect=AssertionError('decoded')):
    assert_equal_arrays(load_both(cfg), first)  # both splits from the cache, no decoding
    os.utime(archive, ns=(0, 10**18))  # a new date, the same contents: still the cache
    assert_equal_arrays(load_both(cfg), first)
    (tmp_path / 'src' / 'cifar10' / 'test' / 'truck' / '0020.png').write_bytes(png_bytes(image(9)))
    with tarfile.open(archive, 'w:gz') as tar:  # new contents: the cache key changes
      tar.add(tmp_path / 'src' / 'cifar10', arcname='cifar10')
    with pytest.raises(AssertionError, match='decoded'):
      sources.load_split(cfg, 'train')


def cifar_pickle(data: np.ndarray, labels, label_key: bytes, protocol: int = 2) -> bytes:
  # Protocol 2 as CIFAR's own files (bytes through _codecs.encode, arrays through
  # _reconstruct); 5 pickles arrays through _frombuffer.
  return pickle.dumps({b'data': data, label_key: list(labels), b'batch_label': b'x',
                       b'filenames': [b'a.png'] * len(labels)}, protocol=protocol)


@pytest.mark.parametrize('archived,protocol', [(True, 2), (False, 2), (True, 5)])
def test_cifar10_pickles(tmp_path, archived, protocol):
  rng = np.random.default_rng(0)
  root = tmp_path / 'src' / 'cifar-10-batches-py'
  root.mkdir(parents=True)
  batches = {f'data_batch_{i}': 2 for i in range(1, 6)} | {'test_batch': 3}
  raw = {}
  for name, n in batches.items():
    raw[name] = (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n))
    (root / name).write_bytes(cifar_pickle(*raw[name], b'labels', protocol))
  (root / 'batches.meta').write_bytes(pickle.dumps({}))
  path = root
  if archived:
    path = tmp_path / 'cifar-10-python.tar.gz'
    with tarfile.open(path, 'w:gz') as tar:
      tar.add(root, arcname='cifar-10-batches-py')
  x_train, y_train, x_test, y_test = load_both(data_cfg(tmp_path, path=str(path)))
  assert x_train.shape == (10, 32, 32, 3) and x_test.shape == (3, 32, 32, 3)
  data, labels = raw['data_batch_2']
  # Row layout: 1024 red values, then green, then blue, each row-major over (h, w).
  h, w, c = 5, 7, 2
  assert x_train[2 + 1, h, w, c] == data[1, c * 1024 + h * 32 + w]
  np.testing.assert_array_equal(x_train[2:4].transpose(0, 3, 1, 2).reshape(2, -1), data)
  np.testing.assert_array_equal(y_train[2:4], labels)
  np.testing.assert_array_equal(y_test, raw['test_batch'][1])


def test_cifar100_pickles_use_fine_labels_and_check_the_name(tmp_path):
  root = tmp_path / 'cifar-100-python'
  root.mkdir()
  for split, n in (('train', 4), ('test', 2)):
    data = np.full((n, 3072), 7, np.uint8)
    (root / split).write_bytes(pickle.dumps(
        {b'data': data, b'fine_labels': [99, 0, 42, 5][:n], b'coarse_labels': [1] * n}))
  (root / 'meta').write_bytes(pickle.dumps({}))
  _, y_train, x_test, y_test = load_both(data_cfg(tmp_path, name='cifar100', path=str(root)))
  assert y_train.tolist() == [99, 0, 42, 5] and y_test.tolist() == [99, 0]
  assert x_test.shape == (2, 32, 32, 3) and (x_test == 7).all()
  with pytest.raises(DataError, match="cifar100 pickles but data.name is 'cifar10'"):
    sources.load_split(data_cfg(tmp_path, name='cifar10', path=str(root)), 'train')


def test_cifar_binary_archives(tmp_path):
  # The published binary format (what TFDS downloads): label byte(s), then 3072 channel-major
  # pixels; CIFAR-100 has the coarse then the fine label, and the fine one is used.
  rng = np.random.default_rng(2)
  for kind, files, label_bytes in (
      ('cifar10', [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin'], 1),
      ('cifar100', ['train.bin', 'test.bin'], 2)):
    root = tmp_path / kind / 'batches'
    root.mkdir(parents=True)
    rows = {}
    for name in files:
      rows[name] = rng.integers(0, 10, (3, label_bytes + 3072), dtype=np.uint8)
      (root / name).write_bytes(rows[name].tobytes())
    x_train, y_train, x_test, y_test = load_both(data_cfg(tmp_path, name=kind, path=str(root)))
    first = rows[files[0]]
    assert x_train.shape == (3 * (len(files) - 1), 32, 32, 3) and x_test.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(y_train[:3], first[:, label_bytes - 1])
    np.testing.assert_array_equal(x_train[:3].transpose(0, 3, 1, 2).reshape(3, -1),
                                  first[:, label_bytes:])
    np.testing.assert_array_equal(y_test, rows[files[-1]][:, label_bytes - 1])
  (root / 'test.bin').write_bytes(b'\x00' * 3000)  # not a whole record
  with pytest.raises(DataError, match='test.bin holds 3,000 bytes, not a whole number of 3074'):
    load_both(data_cfg(tmp_path, name='cifar100', path=str(root)))


def idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
  header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f'>{array.ndim}i', *array.shape)
  return header + array.astype(np.uint8).tobytes()


def write_idx(root: pathlib.Path, n_train=5, n_test=3, compress=True, train_labels=None,
              magic_type=0x08):
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(1)
  arrays = {'train-images-idx3-ubyte': rng.integers(0, 256, (n_train, 28, 28)),
            'train-labels-idx1-ubyte': (rng.integers(0, 10, n_train) if train_labels is None
                                        else np.asarray(train_labels)),
            't10k-images-idx3-ubyte': rng.integers(0, 256, (n_test, 28, 28)),
            't10k-labels-idx1-ubyte': rng.integers(0, 10, n_test)}
  for name, array in arrays.items():
    raw = idx_bytes(array, magic_type if name.startswith('train-images') else 0x08)
    if compress:
      (root / f'{name}.gz').write_bytes(gzip.compress(raw))
    else:
      (root / name).write_bytes(raw)
  return arrays


@pytest.mark.parametrize('compress', [True, False])
def test_idx_files(tmp_path, compress):
  arrays = write_idx(tmp_path / 'fmnist', compress=compress)
  x_train, y_train, x_test, y_test = load_both(
      data_cfg(tmp_path, name='fashion_mnist', path=str(tmp_path / 'fmnist')))
  assert x_train.shape == (5, 28, 28, 1) and x_test.shape == (3, 28, 28, 1)
  np.testing.assert_array_equal(x_train[..., 0], arrays['train-images-idx3-ubyte'])
  np.testing.assert_array_equal(y_train, arrays['train-labels-idx1-ubyte'])
  np.testing.assert_array_equal(x_test[..., 0], arrays['t10k-images-idx3-ubyte'])
  np.testing.assert_array_equal(y_test, arrays['t10k-labels-idx1-ubyte'])


def test_real_fashion_mnist_from_debian(tmp_path):
  if not (FASHION_MNIST_DIR / 'train-images-idx3-ubyte.gz').exists():
    pytest.skip('apt-get install dataset-fashion-mnist')
  x_train, y_train, x_test, y_test = load_both(  # the whole set: its counts are checked
      data_cfg(tmp_path, name='fashion_mnist', path=str(FASHION_MNIST_DIR), check_counts=True))
  assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
  assert np.bincount(y_train).tolist() == [6000] * 10
  assert np.bincount(y_test).tolist() == [1000] * 10
  assert 0 < x_train.mean() < 255


@pytest.mark.slow
def test_real_cifar10_jpeg_archive(tmp_path):
  if not CIFAR10_ARCHIVE.exists():
    pytest.skip(f'{CIFAR10_ARCHIVE} absent')
  x_train, y_train, x_test, y_test = load_both(
      data_cfg(tmp_path, path=str(CIFAR10_ARCHIVE), check_counts=True))
  assert x_train.shape == (50000, 32, 32, 3) and x_test.shape == (10000, 32, 32, 3)
  assert np.bincount(y_train).tolist() == [5000] * 10
  assert np.bincount(y_test).tolist() == [1000] * 10
  # The CIFAR-10 train mean is about (125, 123, 114) on 0-255 (JPEG re-encoding moves it < 1).
  np.testing.assert_allclose(x_train.mean(axis=(0, 1, 2)), [125.3, 123.0, 113.9], atol=1.5)


# ------------------------------------------------------------------------------------------------
# Every DataError names what is wrong


def test_error_missing_path(tmp_path):
  with pytest.raises(DataError, match='nope.tar.gz does not exist') as info:
    sources.load_split(data_cfg(tmp_path, path=str(tmp_path / 'nope.tar.gz')), 'train')
  # How to get it: the TFDS command, and a local copy by data=PATH with an example name.
  assert 'python -m superconv.main --config=configs/resnet56.py' in str(info.value)
  assert 'data=cifar-10-python.tar.gz' in str(info.value)
  with pytest.raises(DataError, match='needs --config.data.path'):
    sources.load_split(data_cfg(tmp_path, path=''), 'train')
  with pytest.raises(DataError, match=r'fashion-mnist does not exist\. To get fashion_mnist: .*'
                     r'`apt-get install dataset-fashion-mnist`.*data=PATH'):
    sources.load_split(data_cfg(tmp_path, name='fashion_mnist',
                                path=str(tmp_path / 'fashion-mnist')), 'train')


def test_nothing_names_the_development_layout():
  # ../shared exists only in this repository's development checkout: no hint, config, doc or
  # README may send a user there.
  root = pathlib.Path(__file__).resolve().parents[1]
  files = [*root.glob('superconv/**/*.py'), *root.glob('configs/*.py'), *root.glob('docs/*.md'),
           *root.glob('notebooks/*.ipynb'), root / 'README.md']
  offending = [f'{p.relative_to(root)}:{i}' for p in files
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if '../shared' in line or '/work/shared' in line]
  assert not offending, offending


def test_error_unknown_layout_says_what_was_expected(tmp_path):
  (tmp_path / 'd').mkdir()
  (tmp_path / 'd' / 'README.txt').write_text('hello')
  with pytest.raises(DataError, match=r'no known data layout.*image folders.*pickles.*IDX'):
    sources.load_split(data_cfg(tmp_path, path=str(tmp_path / 'd')), 'train')
  (tmp_path / 'notes.txt').write_text('hello')
  with pytest.raises(DataError, match='neither a directory nor'):
    sources.load_split(data_cfg(tmp_path, path=str(tmp_path / 'notes.txt')), 'train')
  write_folders(tmp_path / 'flat', {('train', 'cat'): [1], ('test', 'cat'): [2]})
  (tmp_path / 'flat' / 'stray.png').write_bytes(png_bytes(image(0)))
  with pytest.raises(DataError, match='stray.png is not in the expected layout'):
    sources.load_split(data_cfg(tmp_path, path=str(tmp_path / 'flat')), 'train')


def test_error_corrupt_image_names_the_member(tmp_path):
  write_folders(tmp_path / 'd')
  (tmp_path / 'd' / 'test' / 'truck' / 'broken.png').write_bytes(b'\x89PNG not really')
  with pytest.raises(DataError, match='cannot decode image test/truck/broken.png'):
    sources.load_split(data_cfg(tmp_path, path=str(tmp_path / 'd')), 'train')


def test_error_label_outside_the_class_range(tmp_path):
  tree = {('train', f'class{k:02d}'): [k] for k in range(11)} | {('test', 'class00'): [0]}
  write_folders(tmp_path / 'd', tree)
  with pytest.raises(DataError, match=r'label 10 of example 10 is outside \[0, 10\)'):
    sources.load_split(data_cfg(tmp_path, path=str(tmp_path / 'd')), 'train')
  write_idx(tmp_path / 'idx', train_labels=[0, 1, 2, 10, 3])
  with pytest.raises(DataError, match=r'label 10 of example 3'):
    sources.load_split(data_cfg(tmp_path, name='mnist', path=str(tmp_path / 'idx')), 'train')


def test_error_idx_counts_differ(tmp_path):
  write_idx(tmp_path / 'idx', n_train=5, train_labels=[1, 2, 3, 4])
  with pytest.raises(DataError, match='train-images-idx3-ubyte.gz has 5 images but '
                     'train-labels-idx1-ubyte.gz has 4 labels'):
    sources.load_split(data_cfg(tmp_path, name='mnist', path=str(tmp_path / 'idx')), 'train')


def test_error_idx_bad_magic(tmp_path):
  write_idx(tmp_path / 'idx', magic_type=0x0D)  # 0x0D = float32 in the IDX spec
  with pytest.raises(DataError, match='train-images-idx3-ubyte.gz has bad IDX magic'):
    sources.load_split(data_cfg(tmp_path, name='mnist', path=str(tmp_path / 'idx')), 'train')


def test_error_image_size_differs_from_the_dataset(tmp_path):
  write_folders(tmp_path / 'd', shape=(30, 30, 3))
  with pytest.raises(DataError, match=r'train/airplane/0010.png is 30x30 \(WxH\), expected 32x32'):
    sources.load_split(data_cfg(tmp_path, path=str(tmp_path / 'd')), 'train')
  write_idx(tmp_path / 'idx')  # 28x28x1 read as CIFAR-10
  with pytest.raises(DataError, match=r'expected uint8 \(32, 32, 3\) for cifar10'):
    sources.load_split(data_cfg(tmp_path, path=str(tmp_path / 'idx')), 'train')


def test_error_imagenet_is_streaming_only(tmp_path):
  with pytest.raises(DataError, match='streaming'):
    sources.load_split(data_cfg(tmp_path, name='imagenet2012', source='tfds'), 'train')


# ------------------------------------------------------------------------------------------------
# Complete data or none: a damaged archive, a short copy, a replaced file


def folder_tar(tmp_path, compress: bool = True) -> bytes:
  """FOLDER_TREE as the bytes of a tar (gzipped if `compress`), members in sorted order."""
  write_folders(tmp_path / 'src' / 'cifar10')
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode='w') as tar:
    tar.add(tmp_path / 'src' / 'cifar10', arcname='cifar10')
  raw = buf.getvalue()
  return gzip.compress(raw, mtime=0) if compress else raw


def header_offsets(raw_tar: bytes) -> list[int]:
  """Byte offsets of the member headers in an uncompressed tar."""
  with tarfile.open(fileobj=io.BytesIO(raw_tar)) as tar:
    return [m.offset for m in tar]


def damage(kind: str, tmp_path) -> bytes:
  """A .tar.gz of FOLDER_TREE damaged as `kind`."""
  if kind == 'header':  # a garbled member header: tarfile takes it for the end of the archive
    raw = bytearray(folder_tar(tmp_path, compress=False))
    at = header_offsets(bytes(raw))[-3]  # two more images follow it
    raw[at:at + 8] = bytes(8)  # 8 zero bytes over the name: the header checksum fails
    return gzip.compress(bytes(raw), mtime=0)  # a valid gzip of a damaged tar
  gz = bytearray(folder_tar(tmp_path))
  if kind == 'crc':  # the stored CRC-32 (gzip trailer) no longer matches the data
    gz[-8] ^= 0xFF
  elif kind == 'deflate':  # 8 zero bytes inside the compressed data
    gz[len(gz) // 2:len(gz) // 2 + 8] = bytes(8)
  elif kind == 'truncated':
    gz = gz[:len(gz) * 2 // 3]
  return bytes(gz)


@pytest.mark.parametrize('kind', ['header', 'crc', 'deflate', 'truncated'])
def test_damaged_archive_is_refused_and_nothing_cached(tmp_path, kind):
  archive = tmp_path / 'data.tar.gz'
  archive.write_bytes(damage(kind, tmp_path))
  cfg = data_cfg(tmp_path, path=str(archive))
  with pytest.raises(DataError, match=r'data\.tar\.gz: damaged archive') as info:
    sources.load_split(cfg, 'train')
  if kind == 'header':  # tarfile alone lists fewer files without a word
    with tarfile.open(archive) as tar:
      assert 0 < len([m for m in tar if m.isfile()]) < 9
    assert 'stops at a broken header' in str(info.value) and 'data follows' in str(info.value)
  if kind == 'crc':
    assert 'CRC' in str(info.value)
  assert not (tmp_path / 'cache').exists()  # nothing partial is cached


def test_undamaged_archive_with_trailing_zero_records_loads(tmp_path):
  # What tar writers pad with (zero blocks up to a 10 KiB record, and more) is not damage.
  raw = folder_tar(tmp_path, compress=False) + bytes(50 * 512)
  (tmp_path / 'data.tar.gz').write_bytes(gzip.compress(raw))
  got = load_both(data_cfg(tmp_path, path=str(tmp_path / 'data.tar.gz')))
  assert_equal_arrays(got, expected_folders())


def test_damaged_zip_member_is_refused(tmp_path):
  write_folders(tmp_path / 'src')
  archive = tmp_path / 'data.zip'
  with zipfile.ZipFile(archive, 'w', zipfile.ZIP_STORED) as zf:
    for p in sorted((tmp_path / 'src').rglob('*.png')):
      zf.write(p, p.relative_to(tmp_path / 'src').as_posix())
  raw = bytearray(archive.read_bytes())
  raw[raw.index(b'IDAT') + 8] ^= 0xFF  # inside the first stored PNG: its CRC-32 no longer matches
  archive.write_bytes(bytes(raw))
  with pytest.raises(DataError, match='data.zip: cannot read archive.*CRC'):
    sources.load_split(data_cfg(tmp_path, path=str(archive)), 'train')


def full_idx(root: pathlib.Path, per_class: int, test_per_class: int, drop: int = -1) -> None:
  """Uncompressed IDX files with `per_class` train / `test_per_class` test images of each class,
  less train example `drop` (if >= 0). Blank images: only the counts matter here."""
  root.mkdir(parents=True, exist_ok=True)
  for prefix, n in (('train', per_class), ('t10k', test_per_class)):
    labels = np.repeat(np.arange(10), n)
    if prefix == 'train' and drop >= 0:
      labels = np.delete(labels, drop)
    (root / f'{prefix}-images-idx3-ubyte').write_bytes(
        idx_bytes(np.zeros((len(labels), 28, 28), np.uint8)))
    (root / f'{prefix}-labels-idx1-ubyte').write_bytes(idx_bytes(labels))


def test_counts_a_whole_set_loads_a_short_copy_is_refused(tmp_path):
  full_idx(tmp_path / 'full', 6000, 1000)  # Fashion-MNIST's sizes: 6,000 / 1,000 per class
  cfg = data_cfg(tmp_path, name='fashion_mnist', path=str(tmp_path / 'full'), check_counts=True)
  assert len(sources.load_split(cfg, 'train')[1]) == 60000
  full_idx(tmp_path / 'short', 6000, 1000, drop=3 * 6000)  # one image of class 3 missing
  cfg = data_cfg(tmp_path, name='fashion_mnist', path=str(tmp_path / 'short'), check_counts=True)
  with pytest.raises(DataError, match=r'short: not the whole fashion_mnist set: train holds '
                     r'59,999 examples, fashion_mnist has 60,000 \(class 3: 5,999 of 6,000\)'
                     r'.*check_counts=False'):
    sources.load_split(cfg, 'train')
  assert not list((tmp_path / 'cache').glob('*short*'))  # refused before it is cached
  cfg.check_counts = False  # a deliberately smaller copy, said so
  assert len(sources.load_split(cfg, 'train')[1]) == 59999
  cfg.check_counts = True  # its cache entry is no way around the check
  with pytest.raises(DataError, match='not the whole fashion_mnist set'):
    sources.load_split(cfg, 'train')


def test_counts_mnist_per_class_and_sets_without_known_sizes():
  # MNIST's classes are not balanced: its own per-class counts are the reference.
  spec = sources.SPECS['mnist']
  assert sum(spec.train_per_class) == spec.train_size == 60000
  assert sum(spec.test_per_class) == spec.test_size == 10000
  labels = np.repeat(np.arange(10), 6000).astype(np.int32)  # 60,000, but balanced
  test = np.repeat(np.arange(10), spec.test_per_class).astype(np.int32)
  with pytest.raises(DataError, match=r'class 0: 6,000 of 5,923; class 1: 6,000 of 6,742'):
    sources.check_counts({'train_labels': labels, 'test_labels': test}, 'mnist', 'here')
  right = np.repeat(np.arange(10), spec.train_per_class).astype(np.int32)
  sources.check_counts({'train_labels': right, 'test_labels': test}, 'mnist', 'here')
  sources.check_counts({'train_labels': labels[:5], 'test_labels': test[:5]}, 'fake', 'here')


def test_cache_follows_the_file_contents_not_its_date(tmp_path):
  # Two different archives of the same size and modification time: the second is decoded.
  write_idx(tmp_path / 'a', compress=False)
  b = write_idx(tmp_path / 'b', compress=False)
  (tmp_path / 'b' / 'train-images-idx3-ubyte').write_bytes(
      idx_bytes(255 - b['train-images-idx3-ubyte']))
  archive = tmp_path / 'mnist.tar'
  cfg = data_cfg(tmp_path, name='mnist', path=str(archive))
  first = None
  for src in ('a', 'b'):
    with tarfile.open(archive, 'w') as tar:
      for f in sorted((tmp_path / src).iterdir()):
        info = tar.gettarinfo(f, arcname=f.name)
        info.mtime = 0
        with open(f, 'rb') as fh:
          tar.addfile(info, fh)
    os.utime(archive, ns=(10**18, 10**18))
    images, _ = sources.load_split(cfg, 'train')
    if first is None:
      first, size = images, archive.stat().st_size
  assert archive.stat().st_size == size
  np.testing.assert_array_equal(images, 255 - first)
  assert len(list((tmp_path / 'cache').glob('*.npz'))) == 2


# ------------------------------------------------------------------------------------------------
# No data file runs code


class RunsCode:
  """Unpickled, calls `os.system` (through pickle's REDUCE), as a malicious data file would."""

  def __init__(self, command: str):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def poisoned_cifar10(root: pathlib.Path, marker: pathlib.Path, archived: bool = True):
  """A CIFAR-10 python archive whose data_batch_1 runs `touch marker` when unpickled."""
  batches = root / 'cifar-10-batches-py'
  batches.mkdir(parents=True)
  for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
    batch = {b'data': np.zeros((2, 3072), np.uint8), b'labels': [0, 1]}
    if name == 'data_batch_1':
      batch[b'batch_label'] = RunsCode(f'touch {marker}')
    (batches / name).write_bytes(pickle.dumps(batch, protocol=2))
  if not archived:
    return batches
  archive = root / 'cifar-10-python.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(batches, arcname='cifar-10-batches-py')
  return archive


def test_pickle_that_would_run_a_command_is_refused_before_it_runs(tmp_path):
  marker = tmp_path / 'pwned'
  archive = poisoned_cifar10(tmp_path, marker)
  pickle.loads(pickle.dumps(RunsCode(f'touch {marker}.check')))  # the pickle does run code
  assert (tmp_path / 'pwned.check').exists()
  with pytest.raises(DataError, match=r'cifar-10-python.tar.gz: cifar-10-batches-py/data_batch_1: '
                     r'refused to unpickle (posix|os|nt)\.system'):
    sources.load_split(data_cfg(tmp_path, path=str(archive)), 'train')
  assert not marker.exists()
  assert not (tmp_path / 'cache').exists()


@pytest.mark.parametrize('payload', [
    ('builtins', 'eval'), ('subprocess', 'Popen'), ('numpy', 'load'), ('copyreg', '_reconstructor'),
    ('numpy.testing._private.utils', 'runstring')])
def test_unpickler_refuses_every_other_global(tmp_path, payload):
  module, name = payload
  # protocol-2 GLOBAL opcode naming `module.name`, then a call with one argument, then STOP.
  raw = b'\x80\x02c' + f'{module}\n{name}\n'.encode() + b'X\x01\x00\x00\x001\x85R.'
  unpickler = sources._CifarUnpickler(io.BytesIO(raw), 'f')  # pylint: disable=protected-access
  with pytest.raises(DataError, match=f'f: refused to unpickle {module}.{name}'):
    unpickler.load()


def test_unpickler_refuses_a_codec_other_than_latin1():
  raw = b'\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00hex1\x86R.'
  with pytest.raises(DataError, match="encoding 'hex1'"):
    sources._CifarUnpickler(io.BytesIO(raw), 'f').load()  # pylint: disable=protected-access


# ------------------------------------------------------------------------------------------------
# The same through the real CLI: one line, exit 2, nothing cached, nothing run


def cli_on_data(run_cli, tmp_path, path, *extra):
  """The tiny ResNet config on local data `path`; returns (result, its one `superconv:` line)."""
  result = run_cli('--config=configs/resnet56.py:tiny', '--config.progress_bar=False',
                   '--config.data.source=files', f'--config.data.path={path}',
                   f'--config.data.cache_dir={tmp_path / "cache"}', *extra,
                   workdir=tmp_path / 'run', timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith('superconv: ')]
  assert len(lines) == 1, result.stderr[-3000:]
  return result, lines[0]


def test_cli_damaged_archive_exits_2_and_caches_nothing(run_cli, tmp_path):
  archive = tmp_path / 'data.tar.gz'
  archive.write_bytes(damage('header', tmp_path))
  _, line = cli_on_data(run_cli, tmp_path, archive)
  assert 'data.tar.gz: damaged archive' in line and 'stops at a broken header' in line
  assert not (tmp_path / 'cache').exists()
  assert not (tmp_path / 'run' / 'checkpoints').exists()


@pytest.mark.skipif(not CIFAR10_ARCHIVE.exists(), reason='the CIFAR-10 JPEG archive is absent')
@pytest.mark.parametrize('offset', [19_200_000, 19_000_000, 5_000_000])
def test_cli_real_archive_damaged_at_the_issues_offsets(run_cli, tmp_path, offset):
  # Issue 24: 8 zero bytes at 19,200,000 loaded 48,959 train images and trained; at 19,000,000
  # a zlib traceback; at 5,000,000 "test classes [...] have no train folder".
  raw = bytearray(CIFAR10_ARCHIVE.read_bytes())
  raw[offset:offset + 8] = bytes(8)
  archive = tmp_path / 'cifar10-jpeg.tar.gz'
  archive.write_bytes(bytes(raw))
  _, line = cli_on_data(run_cli, tmp_path, archive)
  assert 'cifar10-jpeg.tar.gz: damaged archive' in line and 'Nothing was loaded' in line
  assert not (tmp_path / 'cache').exists()


def test_cli_pickle_that_would_run_a_command_exits_2_and_runs_nothing(run_cli, tmp_path):
  marker = tmp_path / 'pwned'
  archive = poisoned_cifar10(tmp_path, marker)
  _, line = cli_on_data(run_cli, tmp_path, archive)
  assert 'refused to unpickle' in line and '.system' in line
  assert not marker.exists()
  assert not (tmp_path / 'cache').exists()


def test_cli_short_copy_exits_2_naming_what_is_missing(run_cli, tmp_path):
  full_idx(tmp_path / 'short', 6000, 1000, drop=0)
  _, line = cli_on_data(run_cli, tmp_path, tmp_path / 'short', '--config.data.name=fashion_mnist')
  assert 'not the whole fashion_mnist set' in line and 'class 0: 5,999 of 6,000' in line
  assert not (tmp_path / 'cache').exists()


# ------------------------------------------------------------------------------------------------
# TFDS (no network: mock_data for the data, a refused download for the error)


@pytest.mark.parametrize('name,shape', [('cifar10', (32, 32, 3)), ('mnist', (28, 28, 1)),
                                        ('cifar100', (32, 32, 3))])
def test_tfds_mock_data(tmp_path, name, shape):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    images, labels = sources.load_split(data_cfg(tmp_path, name=name, source='tfds'), 'test')
  assert images.shape == (6,) + shape and images.dtype == np.uint8
  assert labels.dtype == np.int32 and ((0 <= labels) & (labels < sources.num_classes(name))).all()


def test_tfds_offline_gives_one_error_naming_both_ways(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  empty = tmp_path / 'tfds'
  empty.mkdir()
  offline = ConnectionError('Failed to establish a new connection: Name or service not known')
  with unittest.mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare',
                                  side_effect=offline):
    with pytest.raises(DataError) as info:
      sources.load_split(data_cfg(tmp_path, source='tfds', tfds_data_dir=str(empty)), 'train')
  message = str(info.value)
  assert str(empty) in message and 'ConnectionError' in message
  assert '--config.data.source=files --config.data.path=' in message and 'IDX' in message
  assert isinstance(info.value.__cause__, ConnectionError)


# ------------------------------------------------------------------------------------------------
# Generated data


def test_fake_data_shapes_determinism_and_signal(tmp_path):
  for name, shape in (('cifar10', (32, 32, 3)), ('fashion_mnist', (28, 28, 1)),
                      ('imagenet2012', (64, 64, 3)), ('fake', (32, 32, 3))):
    x, y = sources.load_split(data_cfg(tmp_path, name=name, source='fake'), 'train')
    assert x.shape == (40,) + shape and x.dtype == np.uint8 and y.dtype == np.int32
  cfg = data_cfg(tmp_path, source='fake', fake_num_train=200, fake_num_test=100)
  x, y = sources.load_split(cfg, 'train')
  assert_equal_arrays(sources.load_split(cfg, 'train'), (x, y))
  assert np.bincount(y).tolist() == [20] * 10
  xt, yt = sources.load_split(cfg, 'test')
  assert not np.array_equal(xt[:10], x[:10])
  # Nearest class-mean colour classifies the held-out split far above chance (10 %).
  means = np.stack([x[y == k].mean(axis=(0, 1, 2)) for k in range(10)])
  pred = np.argmin(((xt.mean(axis=(1, 2))[:, None] - means) ** 2).sum(-1), axis=1)
  assert (pred == yt).mean() > 0.5


# ------------------------------------------------------------------------------------------------
# pipeline.load: mean and subsets


def full_config(tmp_path, **data) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'data': data_cfg(tmp_path, source='fake', **data)})


def test_load_mean_is_over_the_full_train_set(tmp_path):
  d = pipeline.load(full_config(tmp_path, fake_num_train=100, train_subset=30).data)
  x_full, _ = sources.load_split(data_cfg(tmp_path, source='fake', fake_num_train=100), 'train')
  assert d.mean.dtype == np.float32 and d.mean.shape == (32, 32, 3)
  np.testing.assert_allclose(d.mean, x_full.astype(np.float64).mean(0), rtol=1e-6)
  assert d.train_images.shape == (30, 32, 32, 3) and d.num_classes == 10 and d.name == 'cifar10'
  assert np.bincount(d.train_labels).tolist() == [3] * 10  # balanced: 30 is a multiple of 10
  channel = pipeline.load(full_config(tmp_path, mean='channel').data).mean
  np.testing.assert_allclose(channel[0, 0], channel[31, 17])
  assert not pipeline.load(full_config(tmp_path, mean='none').data).mean.any()


def test_subset_indices():
  labels = np.arange(100) % 10
  a = pipeline.subset_indices(labels, 40, seed=0, num_classes=10)
  assert len(set(a.tolist())) == 40 and np.bincount(labels[a]).tolist() == [4] * 10
  np.testing.assert_array_equal(a, pipeline.subset_indices(labels, 40, seed=0, num_classes=10))
  assert not np.array_equal(a, pipeline.subset_indices(labels, 40, seed=1, num_classes=10))
  b = pipeline.subset_indices(labels, 37, seed=0, num_classes=10)  # not a multiple: uniform
  assert len(set(b.tolist())) == 37 and b.max() < 100
  with pytest.raises(DataError, match='train_subset=101 exceeds the 100 examples'):
    pipeline.subset_indices(labels, 101, seed=0, num_classes=10)


# ------------------------------------------------------------------------------------------------
# batch_indices


def reference_indices(key, step, b, n):
  """Position p = step * b + j reads permutation(fold_in(key, p // n))[p % n], in Python ints."""
  perms = {}
  for p in range(step * b, step * b + b):
    if p // n not in perms:
      perms[p // n] = np.asarray(jax.random.permutation(jax.random.fold_in(key, p // n), n))
  return [int(perms[p // n][p % n]) for p in range(step * b, step * b + b)]


@pytest.mark.parametrize('b,n', [(4, 10), (5, 5), (8, 3), (1, 7), (7, 7)])
def test_batch_indices_matches_the_stream_definition(b, n):
  key = jax.random.key(3)
  fn = jax.jit(pipeline.batch_indices, static_argnums=(2, 3))
  for step in (0, 1, 2, 5):
    got = fn(key, jnp.int32(step), b, n)
    assert got.dtype == jnp.int32 and got.shape == (b,)
    assert got.tolist() == reference_indices(key, step, b, n)


def test_batch_indices_each_example_once_per_epoch_and_orders_differ():
  key, n, b = jax.random.key(0), 12, 4
  stream = np.concatenate([pipeline.batch_indices(key, s, b, n) for s in range(6)])
  epoch0, epoch1 = stream[:12], stream[12:]
  assert sorted(epoch0.tolist()) == list(range(12)) == sorted(epoch1.tolist())
  assert not np.array_equal(epoch0, epoch1)
  other = np.concatenate([pipeline.batch_indices(jax.random.key(1), s, b, n) for s in range(3)])
  assert not np.array_equal(epoch0, other)


def test_batch_indices_huge_step_does_not_overflow():
  key, b, n = jax.random.key(0), 1000, 50000
  step = 2_000_000  # step * b = 2e9 > 2^31 - 1
  got = np.asarray(pipeline.batch_indices(key, step, b, n))
  epoch = step * b // n  # 40,000, and the batch starts exactly at an epoch start
  expected = jax.random.permutation(jax.random.fold_in(key, epoch), n)[:b]
  np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------------------------------
# Augmentation


def test_draw_augmentation():
  key = jax.random.key(0)
  aug = pipeline.draw_augmentation(key, 1000, mirror=True, crop_padding=4)
  assert aug['flip'].dtype == jnp.bool_ and 400 < int(aug['flip'].sum()) < 600
  for k in ('dy', 'dx'):
    assert aug[k].dtype == jnp.int32 and set(np.unique(aug[k]).tolist()) == set(range(9))
  plain = pipeline.draw_augmentation(key, 16, mirror=False, crop_padding=0)
  assert not plain['flip'].any() and not plain['dy'].any() and not plain['dx'].any()
  again = pipeline.draw_augmentation(key, 1000, mirror=True, crop_padding=4)
  assert all(np.array_equal(aug[k], again[k]) for k in aug)


def test_apply_augmentation_closed_form():
  # One 2x3 image with two channels; mean varies per pixel, so where it is subtracted matters.
  img = np.arange(12, dtype=np.uint8).reshape(1, 2, 3, 2)
  mean = np.arange(12, dtype=np.float32).reshape(2, 3, 2) / 2
  centred = (img[0] - mean) * 0.5
  aug = lambda f, dy, dx: {'flip': jnp.array([f]), 'dy': jnp.array([dy]), 'dx': jnp.array([dx])}
  apply = lambda a, p: np.asarray(pipeline.apply_augmentation(
      jnp.asarray(img), a, mean=mean, scale=0.5, crop_padding=p))[0]
  np.testing.assert_allclose(apply(aug(False, 0, 0), 0), centred)
  np.testing.assert_allclose(apply(aug(True, 0, 0), 0), centred[:, ::-1])  # mean at the source
  np.testing.assert_allclose(apply(aug(False, 1, 1), 1), centred)            # centre crop
  shifted = apply(aug(True, 2, 0), 1)  # rows 2..3 of the padded image, columns 0..2
  expected = np.zeros((2, 3, 2), np.float32)
  expected[0, 1:] = centred[1, ::-1][:2]
  np.testing.assert_allclose(shifted, expected)


def test_apply_augmentation_device_slices_match_the_global_batch():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 6, 6, 3), dtype=np.uint8))
  aug = pipeline.draw_augmentation(jax.random.key(5), 8, mirror=True, crop_padding=2)
  kw = dict(mean=jnp.full((6, 6, 3), 100.0), scale=1 / 64, crop_padding=2, dtype=jnp.bfloat16)
  fn = jax.jit(pipeline.apply_augmentation, static_argnames=('scale', 'crop_padding', 'dtype'))
  whole = fn(images, aug, **kw)
  halves = [fn(images[i:i + 4], jax.tree.map(lambda a, i=i: a[i:i + 4], aug), **kw)
            for i in (0, 4)]
  assert whole.dtype == jnp.bfloat16 and whole.shape == (8, 6, 6, 3)
  np.testing.assert_array_equal(np.asarray(whole, np.float32),
                                np.asarray(jnp.concatenate(halves), np.float32))


def test_preprocess_eval():
  images = np.array([[[[0, 128, 255]]]], np.uint8)
  out = pipeline.preprocess_eval(images, mean=np.array([[[10.0, 20.0, 30.0]]]), scale=2.0)
  assert out.dtype == jnp.float32 and out.ravel().tolist() == [-20.0, 216.0, 450.0]


# ------------------------------------------------------------------------------------------------
# eval_batches


def test_eval_batches_pads_and_masks():
  images = np.arange(7, dtype=np.uint8).reshape(7, 1, 1, 1) + 1
  labels = np.arange(7) + 10
  x, y, m = pipeline.eval_batches(images, labels, 3, 4)   # bs 3 -> 4 (4 devices), 2 batches
  assert x.shape == (2, 4, 1, 1, 1) and y.dtype == np.int32 and m.dtype == np.bool_
  assert x.ravel().tolist() == [1, 2, 3, 4, 5, 6, 7, 0]
  assert y.ravel().tolist() == [10, 11, 12, 13, 14, 15, 16, 0]
  assert m.ravel().tolist() == [True] * 7 + [False]
  x, _, m = pipeline.eval_batches(images, labels, 1000, 1)  # never larger than the split
  assert x.shape == (1, 7, 1, 1, 1) and m.all()
  _, _, m = pipeline.eval_batches(images, labels, 7, 1)
  assert m.shape == (1, 7)


# ------------------------------------------------------------------------------------------------
# Streaming


def write_stream_folders(root: pathlib.Path) -> dict[int, int]:
  """2 classes x 6 train images (40x40, each one flat colour 10 v) + 2 x 2 test; {value: label}."""
  labels = {}
  for split, per_class in (('train', 6), ('val', 2)):
    for label, cls in enumerate(('ant', 'bee')):
      (root / split / cls).mkdir(parents=True)
      for i in range(per_class):
        v = 10 * (len(labels) + 1)
        labels[v] = label
        Image.new('RGB', (40, 40), (v, v, v)).save(root / split / cls / f'{i}.png')
  return labels


def stream_config(root, batch_size=4, **data) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(seed=7, batch_size=batch_size, data=dict(
      name='imagenet2012', source='files', path=str(root), tfds_data_dir='', mirror=True,
      image_size=16, eval_batch_size=3) | data))


def train_iterator(cfg, **kw):
  """streaming.train_iterator of a stream_config: its data, batch size and seed."""
  return streaming.train_iterator(cfg.data, batch_size=cfg.batch_size, seed=cfg.seed, **kw)


def take(iterator, k):
  return [next(iterator) for _ in range(k)]


def ids(batch) -> list[int]:
  """Each flat-colour image is still one flat colour after crop, resize and flip."""
  assert (batch['image'] == batch['image'][:, :1, :1, :1]).all()
  return batch['image'][:, 0, 0, 0].tolist()


def test_streaming_shards_are_disjoint_and_cover_each_epoch(tmp_path):
  labels = write_stream_folders(tmp_path)
  train_values = [v for v in labels if v <= 120]
  cfg = stream_config(tmp_path)
  hosts = [take(train_iterator(cfg, process_index=i, process_count=2, start_step=0), 6)
           for i in (0, 1)]
  for batches in hosts:
    assert batches[0]['image'].shape == (2, 16, 16, 3) and batches[0]['image'].dtype == np.uint8
    for b in batches:
      assert [labels[v] for v in ids(b)] == b['label'].tolist()
  for epoch in (0, 1):  # 12 images / global batch 4 = 3 steps per epoch
    seen = [ids(b) for h in hosts for b in h[3 * epoch:3 * epoch + 3]]
    flat = sum(seen, [])
    assert sorted(flat) == sorted(train_values)  # disjoint and complete
  order = lambda e: [v for s in range(3 * e, 3 * e + 3) for h in hosts for v in ids(h[s])]
  assert order(0) != order(1)
  # One process reading the whole global batch sees the two hosts' halves, concatenated.
  single = take(train_iterator(cfg, process_index=0, process_count=1, start_step=0), 2)
  for s in range(2):
    np.testing.assert_array_equal(
        single[s]['image'], np.concatenate([hosts[0][s]['image'], hosts[1][s]['image']]))
  # Resuming at step 4 continues exactly, crops and flips included.
  resumed = take(train_iterator(cfg, process_index=1, process_count=2, start_step=4), 2)
  for a, b in zip(resumed, hosts[1][4:6]):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_streaming_crops_and_flips_real_content(tmp_path):
  root = tmp_path / 'd'
  for split in ('train', 'val'):
    (root / split / 'only').mkdir(parents=True)
    gradient = np.tile(np.arange(0, 240, 6, dtype=np.uint8)[None, :, None], (40, 1, 3))
    Image.fromarray(gradient).save(root / split / 'only' / 'x.png')
  cfg = stream_config(root, batch_size=64)
  (batch,) = take(train_iterator(cfg, process_index=0, process_count=1), 1)
  rising = batch['image'][:, 8, -1, 0] > batch['image'][:, 8, 0, 0]
  assert 0 < rising.sum() < 64  # left-right gradient: some flipped, some not
  assert len({batch['image'][i, 8, :, 0].tobytes() for i in range(64)}) > 10  # varied crops


def test_streaming_eval_iterator_pads_and_masks(tmp_path):
  labels = write_stream_folders(tmp_path)
  test_values = sorted(v for v in labels if v > 120)
  cfg = stream_config(tmp_path)  # eval batch 3 -> 4 over 2 hosts; 4 test images: one batch
  hosts = [list(streaming.eval_iterator(cfg.data, process_index=i, process_count=2))
           for i in (0, 1)]
  assert [len(h) for h in hosts] == [1, 1]
  got = [v for h in hosts for b in h for v, m in zip(ids(b), b['mask']) if m]
  assert got == test_values
  cfg = stream_config(tmp_path, eval_batch_size=5)  # 5 -> 6: host 1 holds one real, two padding
  masks = [list(streaming.eval_iterator(cfg.data, process_index=i, process_count=2))[0]['mask']
           for i in (0, 1)]
  masks = [m.tolist() for m in masks]
  assert masks == [[True, True, True], [True, False, False]]


def test_prefetch_to_device_keeps_order_and_shards():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  n = len(jax.devices())
  batches = [{'image': np.full((n * 2, 3), i, np.float32), 'label': np.arange(n * 2) + i}
             for i in range(5)]
  out = list(streaming.prefetch_to_device(iter(batches), 2, sharding))
  assert len(out) == 5
  for i, b in enumerate(out):
    assert isinstance(b['image'], jax.Array) and b['image'].sharding == sharding
    np.testing.assert_array_equal(b['image'], batches[i]['image'])
    np.testing.assert_array_equal(b['label'], batches[i]['label'])


def test_streaming_missing_folder(tmp_path):
  with pytest.raises(DataError, match='found no train folder'):
    next(train_iterator(stream_config(tmp_path), process_index=0, process_count=1))
