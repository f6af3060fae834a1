"""Whole splits as numpy arrays: `load_split(data_cfg, split) -> (uint8 [N, H, W, C], int32 [N])`.

Three sources, chosen by `data_cfg.source` (`data_cfg.name == 'fake'` always means generated data):

- `'tfds'`: `tfds.data_source(name, split, data_dir=data_cfg.tfds_data_dir)`. TFDS downloads and
  prepares the set on first use; offline, it must already be in the data dir. Preparing needs
  TensorFlow; where it is absent, TFDS's checked download is decoded here (`tfds_download`).
- `'files'`: a local file or folder at `data_cfg.path`, in one of the layouts below. The decoded
  arrays are cached as `.npz` (in `data_cfg.cache_dir`, default `~/.cache/superconv`), keyed by
  the file's contents (a BLAKE2 hash of an archive; for a folder, every file's name, size and
  modification time), so only the first load pays for decoding (about 10 s for the 60,000 CIFAR-10
  JPEGs on one core; later loads take well under a second) and a replaced file is decoded again.
- `'fake'`: deterministic generated images whose class is visible in their colour and stripes, so a
  smoke run can beat chance. Sizes `data_cfg.fake_num_train` / `fake_num_test`.

Local layouts (`'files'`), each as a directory, `.tar`, `.tar.gz`/`.tgz` or `.zip`:

(a) image folders `[top/]{train,test}/<class>/<image>.{png,jpg,...}`; labels are the class folder
    names in alphabetical order (CIFAR-10's standard label order is alphabetical);
(b) CIFAR python pickles: `cifar-10-python.tar.gz` (`data_batch_1..5`, `test_batch`) or
    `cifar-100-python.tar.gz` (`train`, `test`; the 100 fine labels). They are read by an
    unpickler that builds only what the format holds (numpy arrays, dicts, lists, bytes, str,
    numbers): a pickle naming any other class or function is refused before anything runs.
    Or CIFAR binary batches: `cifar-10-binary.tar.gz` (`data_batch_1..5.bin`, `test_batch.bin`)
    or `cifar-100-binary.tar.gz` (`train.bin`, `test.bin`), the files TFDS downloads;
(c) MNIST-format IDX files `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (MNIST,
    Fashion-MNIST).

Complete data or none. Every problem raises `DataError` naming the file or member; nothing is
silently skipped. A compressed archive is read to its end, so its checksum is checked (a .tar.gz's
gzip CRC, each zip member's CRC), and a tar listing that stops before the end of its stream (a
damaged header reads to `tarfile` as the end of the archive) is an error. A local copy of a set
whose sizes are known (CIFAR-10/100, MNIST, Fashion-MNIST: `DatasetSpec`) must hold exactly its
train and test examples, class by class; a deliberately smaller copy says so with
`data.check_counts=False`. Nothing is cached before every check has passed.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import os
import pathlib
import pickle
import re
import tarfile
import zipfile
import zlib
from typing import Any, Mapping

import numpy as np

__all__ = ['DataError', 'DatasetSpec', 'SPECS', 'image_shape', 'num_classes', 'load_split',
           'check_counts', 'tfds_data_source', 'tfds_download', 'fake_split', 'streamed']


class DataError(ValueError):
  """The data cannot be found, read or trusted; the message says which file and why."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  num_classes: int
  image_shape: tuple[int, int, int]   # H, W, C of the stored images (ImageNet: the training crop)
  fake_shape: tuple[int, int, int]    # H, W, C of the generated 'fake' images
  in_memory: bool = True              # False: too big to hold, use superconv.data.streaming
  train_size: int = 0                 # examples per split (TFDS sizes; 0: set by the config, fake)
  test_size: int = 0
  # Examples of each class per split, where the set defines them (a local copy is checked
  # against them); () where not.
  train_per_class: tuple[int, ...] = ()
  test_per_class: tuple[int, ...] = ()


SPECS: dict[str, DatasetSpec] = {
    'cifar10': DatasetSpec(10, (32, 32, 3), (32, 32, 3), train_size=50_000, test_size=10_000,
                           train_per_class=(5000,) * 10, test_per_class=(1000,) * 10),
    'cifar100': DatasetSpec(100, (32, 32, 3), (32, 32, 3), train_size=50_000, test_size=10_000,
                            train_per_class=(500,) * 100, test_per_class=(100,) * 100),
    'mnist': DatasetSpec(10, (28, 28, 1), (28, 28, 1), train_size=60_000, test_size=10_000,
                         train_per_class=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                                          5949),
                         test_per_class=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)),
    'fashion_mnist': DatasetSpec(10, (28, 28, 1), (28, 28, 1), train_size=60_000,
                                 test_size=10_000, train_per_class=(6000,) * 10,
                                 test_per_class=(1000,) * 10),
    'imagenet2012': DatasetSpec(1000, (224, 224, 3), (64, 64, 3), in_memory=False,
                                train_size=1_281_167, test_size=50_000),
    'fake': DatasetSpec(10, (32, 32, 3), (32, 32, 3)),
}

_SPLITS = ('train', 'test')
TEST_ALIASES = ('test', 'val', 'validation')  # folder names taken as the test split
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.pgm', '.gif', '.webp')
_IDX_RE = re.compile(r'^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$')
_FORMATS_HELP = (
    "accepted: (a) image folders [top/]{train,test}/<class>/<image>.{png,jpg} as a directory, "
    ".tar, .tar.gz/.tgz or .zip; (b) the CIFAR archives as published, python pickles or binary "
    "(e.g. cifar-10-python.tar.gz, cifar-10-binary.tar.gz, cifar-100-python.tar.gz), archived or "
    "extracted; (c) a directory of MNIST-format IDX files train-images-idx3-ubyte[.gz], "
    "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]")
_CACHE_VERSION = 2
# How to get each set, for the message of a missing local copy.
_TFDS_COMMAND = ('TFDS downloads it on first use (data.source=tfds, the CIFAR configs\' default), '
                 'e.g. python -m superconv.main --config=configs/resnet56.py --workdir=runs/r56')
_HOW_TO_GET = {
    'cifar10': f'{_TFDS_COMMAND}; or pass a local copy as data=PATH (--config.data.path=PATH), '
               'e.g. data=cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html',
    'cifar100': f'{_TFDS_COMMAND} --config.data.name=cifar100; or pass a local copy as data=PATH '
                '(--config.data.path=PATH), e.g. data=cifar-100-python.tar.gz',
    'mnist': 'TFDS downloads it on first use (--config.data.source=tfds); or pass data=PATH '
             '(--config.data.path=PATH), a folder of the four IDX files '
             'train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, '
             't10k-labels-idx1-ubyte.gz',
    'fashion_mnist': 'on Debian or Ubuntu, `apt-get install dataset-fashion-mnist` puts its four '
                     'IDX files in /usr/share/datasets/fashion-mnist; or pass data=PATH '
                     '(--config.data.path=PATH), a folder of train-images-idx3-ubyte.gz, '
                     'train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and '
                     't10k-labels-idx1-ubyte.gz',
}


def _spec(name: str) -> DatasetSpec:
  if name not in SPECS:
    raise DataError(f'unknown dataset {name!r}; known: {sorted(SPECS)}')
  return SPECS[name]


def num_classes(name: str) -> int:
  """Number of classes of dataset `name` (e.g. 10 for 'cifar10', 1000 for 'imagenet2012')."""
  return _spec(name).num_classes


def streamed(name: str) -> bool:
  """Whether dataset `name` is too large to hold in memory and is read by `streaming`."""
  return not _spec(name).in_memory


def image_shape(name: str) -> tuple[int, int, int]:
  """(H, W, C) of dataset `name`'s images as loaded (ImageNet: the 224 training crop)."""
  return _spec(name).image_shape


def load_split(data_cfg: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Loads one whole split into memory.

  Args:
    data_cfg: `config.data` (name, source, path, tfds_data_dir, fake_num_train, fake_num_test,
      cache_dir, check_counts).
    split: 'train' or 'test'.

  Returns:
    (images uint8 [N, H, W, C], labels int32 [N]), labels in [0, num_classes(name)).
  """
  if split not in _SPLITS:
    raise ValueError(f'split must be one of {_SPLITS}, got {split!r}')
  name = data_cfg.name
  spec = _spec(name)
  source = 'fake' if name == 'fake' else data_cfg.source
  if source == 'fake':
    count = data_cfg.fake_num_train if split == 'train' else data_cfg.fake_num_test
    shape = tuple(data_cfg.get('fake_image_shape', None) or spec.fake_shape)
    return fake_split(name, split, count, shape)
  if not spec.in_memory:
    raise DataError(f'{name} is too large to hold in memory; read it with '
                    'superconv.data.streaming.train_iterator')
  if source == 'tfds':
    images, labels = _load_tfds(name, split, data_cfg.get('tfds_data_dir', ''),
                                data_cfg.get('cache_dir', ''), data_cfg.get('check_counts', True))
    where = f'tfds {name}/{split}'
  elif source == 'files':
    arrays = _load_files_cached(name, data_cfg.path, data_cfg.get('cache_dir', ''),
                                data_cfg.get('check_counts', True))
    images, labels = arrays[f'{split}_images'], arrays[f'{split}_labels']
    where = f'{data_cfg.path} ({split})'
  else:
    raise DataError(f"data.source must be 'tfds', 'files' or 'fake', got {source!r}")
  _check(images, labels, name, where)
  return images, labels


def _check(images: np.ndarray, labels: np.ndarray, name: str, where: str) -> None:
  """Raises DataError unless images are uint8 [N, *image_shape] and labels in range."""
  spec = _spec(name)
  if images.dtype != np.uint8 or images.shape[1:] != spec.image_shape:
    raise DataError(f'{where}: images are {images.dtype} {images.shape[1:]}, expected uint8 '
                    f'{spec.image_shape} for {name}')
  if len(images) != len(labels):
    raise DataError(f'{where}: {len(images)} images but {len(labels)} labels')
  bad = (labels < 0) | (labels >= spec.num_classes)
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(f'{where}: label {int(labels[i])} of example {i} is outside '
                    f'[0, {spec.num_classes}) for {name}')


def check_counts(arrays: Mapping[str, np.ndarray], name: str, where: str) -> None:
  """Raises DataError unless both splits hold exactly the set's examples, class by class.

  `arrays` holds `{split}_labels` for 'train' and 'test'. Sets without known sizes (fake,
  ImageNet) pass. The message names each split that differs and its classes that differ.
  """
  spec = _spec(name)
  problems = []
  for split in _SPLITS:
    labels = arrays[f'{split}_labels']
    total = spec.train_size if split == 'train' else spec.test_size
    per_class = spec.train_per_class if split == 'train' else spec.test_per_class
    if not total:
      continue
    counts = np.bincount(labels, minlength=len(per_class) or 1)
    off = [f'class {k}: {int(counts[k]):,} of {n:,}' for k, n in enumerate(per_class)
           if counts[k] != n]
    if len(labels) != total or off:
      shown = '; '.join(off[:5]) + ('; ...' if len(off) > 5 else '')
      problems.append(f'{split} holds {len(labels):,} examples, {name} has {total:,}'
                      + (f' ({shown})' if off else ''))
  if problems:
    raise DataError(f'{where}: not the whole {name} set: {", ".join(problems)}. The copy is '
                    'incomplete or damaged (fetch it again); if it is a deliberately smaller '
                    'copy, say so with --config.data.check_counts=False')


# ------------------------------------------------------------------------------------------------
# TFDS


def _tfds_error(name: str, split: str, data_dir: str, e: BaseException) -> DataError:
  where = data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'
  return DataError(
      f'could not load {name}/{split} through TFDS ({type(e).__name__}: {e}). Either put the '
      f'prepared dataset where TFDS looks ({where}; set --config.data.tfds_data_dir) or '
      f'download it there on a machine with network access, or read local files with '
      f'--config.data.source=files --config.data.path=PATH ({_FORMATS_HELP}).')


def tfds_data_source(name: str, split: str, data_dir: str = '') -> Any:
  """`tfds.data_source(name, split)` (random access, no TensorFlow), or one clear DataError."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (absent on some hosts)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None, download=True)
  except Exception as e:  # pylint: disable=broad-except  (network, missing files, missing deps)
    raise _tfds_error(name, split, data_dir, e) from e


def _needs_tensorflow(error: BaseException | None) -> bool:
  """Whether `error`, or an error behind it, is a missing `tensorflow` module."""
  while error is not None:
    if isinstance(error, ModuleNotFoundError) and (error.name or '').split('.')[0] == 'tensorflow':
      return True
    if "No module named 'tensorflow'" in str(error):  # TFDS rewraps it (ExtractError)
      return True
    error = error.__cause__ or error.__context__
  return False


def _load_tfds(name: str, split: str, data_dir: str, cache_dir: str = '',
               counts: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Reads a whole TFDS split into arrays (through `tfds_download` where TensorFlow is absent)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (absent on some hosts)
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=True)
  except Exception as e:  # pylint: disable=broad-except  (network, missing files, missing deps)
    if not _needs_tensorflow(e):
      raise _tfds_error(name, split, data_dir, e) from e
    arrays = tfds_download(name, data_dir, cache_dir, counts)
    return arrays[f'{split}_images'], arrays[f'{split}_labels']
  # One record at a time: the data source decodes each image on access; 60k 32x32 records take a
  # few seconds.
  records = [source[i] for i in range(len(source))]
  if not records:
    raise DataError(f'tfds {name}/{split} is empty')
  images = np.stack([np.asarray(r['image'], np.uint8) for r in records])
  labels = np.asarray([r['label'] for r in records], np.int32)
  return images, labels


def tfds_download(name: str, data_dir: str = '', cache_dir: str = '',
                  counts: bool = True) -> Mapping[str, np.ndarray]:
  """Both splits of `name` from the files TFDS downloads for it, decoded here, without TensorFlow.

  tensorflow-datasets 4.9.10 needs TensorFlow to *prepare* CIFAR-10/100, MNIST and Fashion-MNIST
  (its extractor and CIFAR reader open files with `tf.io.gfile`, its Image feature encodes PNGs
  with `tf.image.encode_png`), though reading a prepared set (`tfds.data_source`) does not. So
  where TensorFlow is absent, TFDS's download manager fetches the set's registered files into
  `<data_dir>/downloads` and checks them against TFDS's registered sizes and SHA-256 sums, and
  these official files (CIFAR binary archives, IDX files) are decoded and cached here as for
  `source='files'`, with the same checks. The examples are the set's own, in the files' order.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (absent on some hosts)
  url_infos = tfds.builder_cls(name).url_infos or {}
  if not url_infos:
    raise DataError(f'TFDS registers no download for {name}; read local files with '
                    f'--config.data.source=files --config.data.path=PATH ({_FORMATS_HELP})')
  root = data_dir or os.environ.get('TFDS_DATA_DIR') or tfds.core.constants.DATA_DIR
  if '://' in str(root):
    raise DataError(f'preparing {name} in {root} needs TensorFlow (pip install tensorflow-cpu); '
                    'without it, TFDS downloads are decoded from a local data dir only')
  downloads = pathlib.Path(root).expanduser() / 'downloads'
  manager = tfds.download.DownloadManager(download_dir=downloads, url_infos=url_infos,
                                          dataset_name=name, force_checksums_validation=True)
  urls = sorted(url_infos)
  try:
    paths = [pathlib.Path(p) for p in manager.download(urls)]
  except Exception as e:  # pylint: disable=broad-except  (network, checksum mismatch)
    raise _tfds_error(name, 'train', data_dir, e) from e
  if len(paths) == 1:  # one archive (CIFAR)
    return _load_files_cached(name, str(paths[0]), cache_dir, counts)
  # Several files (MNIST's four IDX files), stored under names TFDS derives from their URLs: a
  # folder of links under the names the format reader knows.
  folder = downloads / f'superconv-{name}'
  folder.mkdir(parents=True, exist_ok=True)
  for url, path in zip(urls, paths):
    tmp = folder / f'.{url_infos[url].filename}.{os.getpid()}'  # replaced atomically: hosts
    tmp.unlink(missing_ok=True)                                  # sharing the folder agree
    tmp.symlink_to(path.resolve())
    os.replace(tmp, folder / url_infos[url].filename)
  return _load_files_cached(name, str(folder), cache_dir, counts)


# ------------------------------------------------------------------------------------------------
# Local files: a tree of members (directory, tar or zip), its layout, the decoders and the cache


def _read_tree(path: pathlib.Path) -> Mapping[str, Any]:
  """{posix member path: bytes, or a Path to read lazily} for a directory, tar or zip."""
  def wanted(member: str) -> bool:
    parts = member.split('/')
    return not any(p.startswith('.') or p == '__MACOSX' for p in parts)

  if path.is_dir():
    tree = {}
    for root, dirs, files in os.walk(path):
      dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
      for f in files:
        rel = pathlib.Path(root, f).relative_to(path).as_posix()
        if wanted(rel):
          tree[rel] = pathlib.Path(root, f)
    return tree
  try:
    if tarfile.is_tarfile(path):
      return _read_tar(path, wanted)
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as zf:
        # Every member is read, so every member's CRC is checked.
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith('/') and wanted(n)}
  except _ARCHIVE_ERRORS as e:
    raise DataError(f'{path}: cannot read archive ({type(e).__name__}: {e})') from e
  if path.parent.is_dir() and _IDX_RE.match(path.name):
    return _read_tree(path.parent)  # one IDX file named: use its folder
  raise DataError(f'{path} is neither a directory nor a .tar/.tar.gz/.tgz/.zip archive; '
                  f'{_FORMATS_HELP}')


# What a damaged or truncated archive raises while it is read (gzip's CRC and length checks give
# OSError / EOFError, a garbled deflate stream zlib.error).
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error,
                   lzma.LZMAError)


def _read_tar(path: pathlib.Path, wanted) -> dict[str, bytes]:
  """Every wanted file of a (compressed) tar, the whole stream read and checked.

  `tarfile` takes a header whose checksum fails for the end of the archive and stops without a
  word, so a damaged .tar.gz would load only the files before the damage. Here the listing must
  end where the stream ends: whatever follows the last header read must be the zero blocks that
  close a tar. Reading on to the end of the stream makes gzip (bz2, xz) check its CRC and length.
  """
  tree, count, last = {}, 0, '(none)'
  with tarfile.open(path) as tar:
    try:
      # One sequential pass: a .tar.gz has no random access.
      for member in tar:
        name = member.name.removeprefix('./')
        if member.isfile() and wanted(name):
          tree[name] = tar.extractfile(member).read()
        count, last = count + 1, member.name
      end = tar.offset
      stream = tar.fileobj
      stream.seek(end)
      while chunk := stream.read(1 << 20):
        if chunk.count(0) != len(chunk):
          raise DataError(
              f'{path}: damaged archive: its tar listing stops at a broken header at byte '
              f'{end:,} of the unpacked stream, after {count:,} entries (the last '
              f'{last}), but data follows, so every file after that is missing. Nothing was '
              'loaded; fetch the archive again (`gzip -t` checks a .tar.gz)')
    except _ARCHIVE_ERRORS as e:
      raise DataError(f'{path}: damaged archive: cannot read past entry {count:,} (the last '
                      f'read: {last}) ({type(e).__name__}: {e}). Nothing was loaded; fetch the '
                      'archive again (`gzip -t` checks a .tar.gz)') from e
  return tree


def _source_key(path: pathlib.Path) -> list:
  """What identifies the contents of `path`: a hash of a file, a listing of a folder."""
  if path.is_dir():  # hashing 60,000 images would cost what the cache saves; stat them
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in path.rglob('*') if p.is_file())
  digest = hashlib.blake2b(digest_size=16)
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 22):  # ~0.1 s for CIFAR-10's 20 MB archive
      digest.update(chunk)
  return [path.stat().st_size, digest.hexdigest()]


def _bytes(tree: Mapping[str, Any], member: str) -> bytes:
  value = tree[member]
  return value.read_bytes() if isinstance(value, pathlib.Path) else value


def _load_files_cached(name: str, path_str: str, cache_dir: str,
                       counts: bool = True) -> Mapping[str, np.ndarray]:
  """Both splits of the local data set at `path_str`, decoded once and cached as .npz.

  Cached only once every check has passed; with `counts`, the set's sizes are checked on every
  load (a cached copy too: the cache of a deliberately smaller copy is not the whole set).
  """
  how = _HOW_TO_GET.get(name, _FORMATS_HELP)
  if not path_str:
    raise DataError(f"data.source='files' needs --config.data.path=PATH; {_FORMATS_HELP}. To get "
                    f'{name}: {how}')
  path = pathlib.Path(path_str).expanduser().resolve()
  if not path.exists():
    raise DataError(f'data path {path} does not exist. To get {name}: {how}')
  key = [_CACHE_VERSION, name, str(path), _source_key(path)]
  digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
  cache_root = pathlib.Path(cache_dir or '~/.cache/superconv').expanduser()
  cache_file = cache_root / f'{name}-{path.name}-{digest}.npz'
  arrays = None
  if cache_file.exists():
    try:
      with np.load(cache_file, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
      pass  # a broken cache file (e.g. an interrupted write elsewhere): decode again
  if arrays is not None:
    if counts:
      check_counts(arrays, name, str(path))
    return arrays
  arrays = _decode_files(name, path)
  for split in _SPLITS:
    _check(arrays[f'{split}_images'], arrays[f'{split}_labels'], name, f'{path} ({split})')
  if counts:
    check_counts(arrays, name, str(path))
  cache_root.mkdir(parents=True, exist_ok=True)
  tmp = cache_file.with_suffix(f'.tmp{os.getpid()}.npz')
  np.savez(tmp, **arrays)  # uncompressed: loading 180 MB of CIFAR is then I/O-bound
  os.replace(tmp, cache_file)  # atomic: concurrent readers never see half a file
  return arrays


def _decode_files(name: str, path: pathlib.Path) -> dict[str, np.ndarray]:
  """Detects the layout of `path` and decodes both splits."""
  tree = _read_tree(path)
  by_base: dict[str, list[str]] = {}
  for member in tree:
    by_base.setdefault(member.rsplit('/', 1)[-1], []).append(member)

  idx = {m: _IDX_RE.match(m.rsplit('/', 1)[-1]) for m in tree}
  idx = {m: g for m, g in idx.items() if g}
  if idx:
    return _decode_idx(name, path, tree, idx)
  if 'data_batch_1' in by_base and 'test_batch' in by_base:
    return _decode_cifar_pickles(name, path, tree, by_base, 'cifar10')
  if 'data_batch_1.bin' in by_base and 'test_batch.bin' in by_base:
    return _decode_cifar_binary(name, path, tree, by_base, 'cifar10')
  if 'train.bin' in by_base and 'test.bin' in by_base:
    return _decode_cifar_binary(name, path, tree, by_base, 'cifar100')
  if 'train' in by_base and 'test' in by_base and 'meta' in by_base:
    return _decode_cifar_pickles(name, path, tree, by_base, 'cifar100')
  folders = _image_folder_members(path, tree)
  if folders is not None:
    return _decode_image_folders(name, path, tree, folders)
  raise DataError(f'{path}: no known data layout found ({len(tree)} files); {_FORMATS_HELP}')


def _image_folder_members(path: pathlib.Path,
                          tree: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]] | None:
  """{'train'|'test': [(class, member), ...]} for layout (a), None if no images at all."""
  images = sorted(m for m in tree if m.lower().endswith(IMAGE_EXTENSIONS))
  if not images:
    return None
  expected = '[top/]{train,test}/<class>/<image>'
  out: dict[str, list[tuple[str, str]]] = {}
  prefixes, test_names = set(), set()
  for member in images:
    parts = member.split('/')
    if len(parts) < 3 or parts[-3] not in ('train',) + TEST_ALIASES:
      raise DataError(f'{path}: image {member} is not in the expected layout {expected}')
    prefixes.add('/'.join(parts[:-3]))
    split = 'train' if parts[-3] == 'train' else 'test'
    if split == 'test':
      test_names.add(parts[-3])
    out.setdefault(split, []).append((parts[-2], member))
  if len(prefixes) > 1:
    raise DataError(f'{path}: several image-folder trees ({sorted(prefixes)}); expected one '
                    f'{expected}')
  if len(test_names) > 1:
    raise DataError(f'{path}: several test splits {sorted(test_names)}; keep one')
  for split in _SPLITS:
    if split not in out:
      raise DataError(f'{path}: no {split} images; expected {expected}')
  return out


def decode_errors() -> tuple[type[BaseException], ...]:
  """What Pillow raises for a file that is not a readable image (truncated, corrupt, a bomb)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _decode_image(path: pathlib.Path, tree: Mapping[str, Any], member: str,
                  shape: tuple[int, int, int]) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  h, w, c = shape
  try:
    with Image.open(io.BytesIO(_bytes(tree, member))) as im:
      mode = 'RGB' if c == 3 else 'L'
      im = im if im.mode == mode else im.convert(mode)
      array = np.asarray(im, np.uint8)
  except decode_errors() as e:
    raise DataError(f'{path}: cannot decode image {member} ({type(e).__name__}: {e})') from e
  if array.shape[:2] != (h, w):
    raise DataError(f'{path}: image {member} is {array.shape[1]}x{array.shape[0]} (WxH), '
                    f'expected {w}x{h}')
  return array.reshape(shape)


def _decode_image_folders(name: str, path: pathlib.Path, tree: Mapping[str, Any],
                          folders: dict[str, list[tuple[str, str]]]) -> dict[str, np.ndarray]:
  shape = image_shape(name)
  classes = sorted({cls for cls, _ in folders['train']})
  label_of = {cls: i for i, cls in enumerate(classes)}
  out = {}
  for split in _SPLITS:
    members = sorted(folders[split])
    unknown = sorted({cls for cls, _ in members} - set(label_of))
    if unknown:
      raise DataError(f'{path}: test classes {unknown} have no train folder')
    images = np.empty((len(members),) + shape, np.uint8)
    for i, (_, member) in enumerate(members):
      images[i] = _decode_image(path, tree, member, shape)
    out[f'{split}_images'] = images
    out[f'{split}_labels'] = np.asarray([label_of[cls] for cls, _ in members], np.int32)
  return out


def _latin1(text: str, encoding: str) -> bytes:
  """`_codecs.encode` as pickle protocol 2 uses it for bytes, for latin-1 only."""
  if encoding not in ('latin1', 'latin-1'):
    raise DataError(f'pickle asks for bytes in encoding {encoding!r}; protocol 2 writes latin1')
  return codecs.encode(text, 'latin1')


def _pickle_globals() -> dict[tuple[str, str], Any]:
  """The only globals a CIFAR pickle may name: what rebuilds a numpy array, and bytes.

  CIFAR's own files are protocol-2 pickles of dicts (bytes keys) holding a uint8 array, lists
  of ints and bytes; numpy pickles an array as `_reconstruct(ndarray, shape, dtype)` + state
  (protocols 2-4) or `_frombuffer(buffer, dtype, shape, order)` (5), under `numpy.core` (numpy
  1) or `numpy._core` (numpy 2). None of these can reach code outside numpy's array building.
  """
  try:
    from numpy._core import multiarray, numeric  # pylint: disable=g-import-not-at-top
  except ImportError:  # numpy 1
    from numpy.core import multiarray, numeric  # pylint: disable=g-import-not-at-top
  allowed: dict[tuple[str, str], Any] = {('numpy', 'ndarray'): np.ndarray,
                                         ('numpy', 'dtype'): np.dtype,
                                         ('_codecs', 'encode'): _latin1}
  # pylint: disable=protected-access  (numpy's own pickle entry points)
  for package in ('numpy.core', 'numpy._core'):
    allowed[(f'{package}.multiarray', '_reconstruct')] = multiarray._reconstruct
    allowed[(f'{package}.multiarray', 'scalar')] = multiarray.scalar
    allowed[(f'{package}.numeric', '_frombuffer')] = numeric._frombuffer
  return allowed


class _CifarUnpickler(pickle.Unpickler):
  """Unpickles what a CIFAR batch holds and refuses, before it is called, anything else.

  A pickle runs code by naming a callable (GLOBAL / STACK_GLOBAL) and calling it (REDUCE);
  every name goes through `find_class`, so refusing there stops it before any call.
  """

  def __init__(self, file: io.BytesIO, where: str):
    super().__init__(file, encoding='bytes')  # CIFAR's Python-2 str are bytes
    self._where = where
    self._allowed = _pickle_globals()

  def find_class(self, module: str, name: str) -> Any:
    found = self._allowed.get((module, name))
    if found is None:
      raise DataError(
          f'{self._where}: refused to unpickle {module}.{name}: a CIFAR pickle holds only numpy '
          'arrays, dicts, lists, bytes, str and numbers, and any other class or function could '
          'run code. Nothing from this file was run; do not use this archive')
    return found

  def persistent_load(self, pid: Any) -> Any:
    raise DataError(f'{self._where}: refused a persistent id in a CIFAR pickle')


def _only_member(path: pathlib.Path, by_base: dict[str, list[str]], base: str,
                 what: str) -> str:
  """The one archive member named `base` (a CIFAR batch file); none or several is a DataError."""
  members = by_base.get(base, [])
  if len(members) != 1:
    raise DataError(f'{path}: expected exactly one {what}, found {members or "none"}')
  return members[0]


def _cifar_split(images: list[np.ndarray], labels: list[np.ndarray]) -> tuple[np.ndarray, ...]:
  """A split's batches of channel-major [N, 3072] rows as uint8 [N, 32, 32, 3] and int32 labels."""
  chw = np.concatenate(images).reshape(-1, 3, 32, 32)
  return (np.ascontiguousarray(chw.transpose(0, 2, 3, 1)),
          np.concatenate(labels).astype(np.int32))


def _decode_cifar_pickles(name: str, path: pathlib.Path, tree: Mapping[str, Any],
                          by_base: dict[str, list[str]], kind: str) -> dict[str, np.ndarray]:
  """CIFAR python pickles: dicts with b'data' uint8 [N, 3072] (channel-major) and labels."""
  if name != kind:
    raise DataError(f'{path} holds {kind} pickles but data.name is {name!r}')
  files = ({'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']}
           if kind == 'cifar10' else {'train': ['train'], 'test': ['test']})
  label_key = b'labels' if kind == 'cifar10' else b'fine_labels'
  out = {}
  for split, bases in files.items():
    images, labels = [], []
    for base in bases:
      member = _only_member(path, by_base, base, f'{base} pickle')
      try:
        batch = _CifarUnpickler(io.BytesIO(_bytes(tree, member)), f'{path}: {member}').load()
        data = np.asarray(batch[b'data'], np.uint8)
        label = np.asarray(batch[label_key], np.int64)
      except DataError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (any malformed pickle)
        raise DataError(f'{path}: cannot read CIFAR pickle {member} '
                        f'({type(e).__name__}: {e})') from e
      if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(label):
        raise DataError(f'{path}: {member} has data {data.shape} and {len(label)} labels, '
                        'expected [N, 3072] and N labels')
      images.append(data)
      labels.append(label)
    out[f'{split}_images'], out[f'{split}_labels'] = _cifar_split(images, labels)
  return out


def _decode_cifar_binary(name: str, path: pathlib.Path, tree: Mapping[str, Any],
                         by_base: dict[str, list[str]], kind: str) -> dict[str, np.ndarray]:
  """CIFAR binary: records of label byte(s) then 3072 pixel bytes (1024 R, 1024 G, 1024 B).

  CIFAR-10 (`cifar-10-binary.tar.gz`): `data_batch_1..5.bin`, `test_batch.bin`, one label byte.
  CIFAR-100 (`cifar-100-binary.tar.gz`): `train.bin`, `test.bin`, the coarse then the fine label
  byte (the fine label is used).
  """
  if name != kind:
    raise DataError(f'{path} holds {kind} binary batches but data.name is {name!r}')
  files = ({'train': [f'data_batch_{i}.bin' for i in range(1, 6)], 'test': ['test_batch.bin']}
           if kind == 'cifar10' else {'train': ['train.bin'], 'test': ['test.bin']})
  label_bytes = 1 if kind == 'cifar10' else 2
  record = label_bytes + 3 * 32 * 32
  out = {}
  for split, bases in files.items():
    images, labels = [], []
    for base in bases:
      member = _only_member(path, by_base, base, base)
      raw = _bytes(tree, member)
      if not raw or len(raw) % record:
        raise DataError(f'{path}: {member} holds {len(raw):,} bytes, not a whole number of '
                        f'{record}-byte records')
      rows = np.frombuffer(raw, np.uint8).reshape(-1, record)
      labels.append(rows[:, label_bytes - 1])
      images.append(rows[:, label_bytes:])
    out[f'{split}_images'], out[f'{split}_labels'] = _cifar_split(images, labels)
  return out


def _parse_idx(path: pathlib.Path, member: str, raw: bytes, ndim: int) -> np.ndarray:
  """IDX: magic 0x00 0x00 <type 0x08 = uint8> <ndim>, ndim big-endian int32 sizes, then data."""
  if raw[:2] == b'\x1f\x8b':
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
      raise DataError(f'{path}: cannot gunzip {member} ({e})') from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
    raise DataError(f'{path}: {member} has bad IDX magic number {raw[:4].hex()}, expected '
                    f'00000 8{ndim:02x} (uint8, {ndim} dims)')
  dims = tuple(int(d) for d in np.frombuffer(raw, '>i4', count=ndim, offset=4))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != np.prod(dims):
    raise DataError(f'{path}: {member} declares shape {dims} but holds {data.size} bytes')
  return data.reshape(dims)


def _decode_idx(name: str, path: pathlib.Path, tree: Mapping[str, Any],
                idx: dict[str, re.Match]) -> dict[str, np.ndarray]:
  found = {(g.group(1), g.group(2)): m for m, g in idx.items()}
  need = [(p, k) for p in ('train', 't10k') for k in ('images', 'labels')]
  missing = [f'{p}-{k}-idx{3 if k == "images" else 1}-ubyte[.gz]' for p, k in need
             if (p, k) not in found]
  if missing:
    raise DataError(f'{path}: IDX files missing: {missing}')
  out = {}
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    img_member, lbl_member = found[(prefix, 'images')], found[(prefix, 'labels')]
    images = _parse_idx(path, img_member, _bytes(tree, img_member), 3)
    labels = _parse_idx(path, lbl_member, _bytes(tree, lbl_member), 1)
    if len(images) != len(labels):
      raise DataError(f'{path}: {img_member} has {len(images)} images but {lbl_member} has '
                      f'{len(labels)} labels')
    # Checked here too (not only in _check) so the message names the labels file itself.
    k = num_classes(name)
    if (labels >= k).any():
      i = int(np.argmax(labels >= k))
      raise DataError(f'{path}: {lbl_member}: label {int(labels[i])} of example {i} is outside '
                      f'[0, {k}) for {name}')
    out[f'{split}_images'] = images[..., None]
    out[f'{split}_labels'] = labels.astype(np.int32)
  return out


# ------------------------------------------------------------------------------------------------
# Generated data


def fake_split(name: str, split: str, count: int,
               shape: tuple[int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic learnable images: class colour + class stripes + noise, uint8.

  Class k has a mean colour m_k (drawn once from a fixed seed, shared by both splits) and
  horizontal stripes of frequency 1 + k mod 4 (invariant to horizontal flips, so mirroring keeps
  the signal):  x = clip(m_k + 40 cos(2 pi f_k y / H + phi_k) + N(0, 30^2), 0, 255).
  Labels are balanced (count // K or +1 per class) in a fixed shuffled order.

  Examples:
    >>> x, y = fake_split('cifar10', 'train', 20)
    >>> x.shape, x.dtype.name, y.dtype.name, sorted(set(y.tolist())) == list(range(10))
    ((20, 32, 32, 3), 'uint8', 'int32', True)
  """
  spec = _spec(name)
  h, w, c = shape or spec.fake_shape
  k = spec.num_classes
  templates_rng = np.random.default_rng(1234)
  colours = templates_rng.uniform(60, 195, (k, c))
  phases = templates_rng.uniform(0, 2 * np.pi, k)
  freqs = 1 + np.arange(k) % 4
  rng = np.random.default_rng(_SPLITS.index(split) + 1)
  labels = rng.permutation(np.arange(count) % k).astype(np.int32)
  y = np.arange(h)[None, :] / h
  stripes = 40 * np.cos(2 * np.pi * freqs[:, None] * y + phases[:, None])  # [K, H]
  images = (colours[labels][:, None, None, :] + stripes[labels][:, :, None, None]
            + rng.normal(0, 30, (count, h, w, c)))
  return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels
