"""Short trainings on the real data at hand: accuracy must land clearly above chance.

The bands come from measured runs (see each test); they are wide enough for CPU-to-CPU numerical
differences and narrow enough that a broken pipeline (labels shuffled against images, a wrong
mean, augmentation applied at test time) falls out of them.
"""

import json
import os

import pytest

from conftest import CIFAR10_ARCHIVE, FASHION_MNIST_DIR, launch

pytestmark = pytest.mark.integration  # the program in a subprocess, on real data


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """One decoded-data cache for the module: the CIFAR-10 archive is decoded once, not per run
  (60,000 JPEGs, about 20 s of this CPU each time)."""
  return tmp_path_factory.mktemp('decoded')


def _run(config, tmp_path, cache, *overrides):
  # Through the real CLI, in its own process: one CPU device, as a user's run on this machine.
  workdir = tmp_path / 'run'
  launch(f'--config={config}', '--config.progress_bar=False', f'--config.data.cache_dir={cache}',
         '--config.checkpoint_every_steps=0', *overrides, workdir=workdir, timeout=600, check=0)
  with open(workdir / 'summary.json') as f:
    return json.load(f)


@pytest.mark.skipif(not os.path.exists(os.path.join(FASHION_MNIST_DIR, 't10k-labels-idx1-ubyte.gz')),
                    reason='apt-get install dataset-fashion-mnist')
def test_lenet_learns_real_fashion_mnist(tmp_path, cache):
  # Caffe's LeNet with its `inv` policy, 300 updates at batch 64 (a third of an epoch), then
  # the full 10,000-image test split. Measured here (seed 0, 2-core CPU): 0.8207.
  summary = _run('configs/lenet_fashion_mnist.py:policy=inv', tmp_path, cache,
                 '--config.num_steps=300', '--config.eval_every_steps=300',
                 '--config.log_every_steps=100')
  assert summary['steps'] == 300
  assert 0.76 <= summary['final_eval_accuracy'] <= 0.88


@pytest.mark.slow  # ~2.5 min here; the BN test below trains ResNet-8 on the same real data in CI
@pytest.mark.skipif(not os.path.exists(CIFAR10_ARCHIVE), reason='needs ../shared/data')
def test_small_resnet_learns_real_cifar10(tmp_path, cache):
  # The authors' Caffe ResNet-20 on a fixed 2,000-image subset of the real (JPEG) CIFAR-10, one
  # CLR cycle 0.1 -> 1.0 -> 0.1 over 120 updates at batch 64, evaluated on all 10,000 test
  # images. Measured here (seed 0, 2-core CPU): 0.2293; chance is 0.10.
  summary = _run(f'configs/resnet20.py:data={CIFAR10_ARCHIVE}', tmp_path, cache,
                 '--config.data.train_subset=2000', '--config.batch_size=64',
                 '--config.num_steps=120', '--config.schedule.step_size=60',
                 '--config.schedule.max_lr=1.0', '--config.eval_every_steps=120',
                 '--config.log_every_steps=40')
  assert summary['steps'] == 120
  assert 0.17 <= summary['final_eval_accuracy'] <= 0.32


def _cifar10_as_image_folders(root, train_per_class: int, val_per_class: int) -> None:
  """The first N train / M test JPEGs of each class, in the ImageNet layout (split/class/image)."""
  import collections  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top
  limits = {'train': train_per_class, 'test': val_per_class}
  counts = collections.Counter()
  with tarfile.open(CIFAR10_ARCHIVE) as archive:
    for member in archive:
      parts = member.name.split('/')  # cifar10/<split>/<class>/<NNNN>.jpg
      if not member.isfile() or len(parts) != 4 or counts[parts[1], parts[2]] >= limits[parts[1]]:
        continue
      counts[parts[1], parts[2]] += 1
      out = root / ('train' if parts[1] == 'train' else 'val') / parts[2] / parts[3]
      out.parent.mkdir(parents=True, exist_ok=True)
      out.write_bytes(archive.extractfile(member).read())


@pytest.mark.skipif(not os.path.exists(CIFAR10_ARCHIVE), reason='needs ../shared/data')
def test_streamed_input_learns_real_images(tmp_path, cache):
  # The ImageNet path end to end on real photographs: 2,000 CIFAR-10 JPEGs (200 a class) and 500
  # test images laid out as ImageNet folders, decoded, random-resized-cropped and flipped on the
  # host, fed to the tiny ResNet-50 (1000-way head, 10 classes used), Caffe 1cycle 0.005 -> 0.05,
  # 300 updates at batch 32, center-crop evaluation. Measured here (2-core CPU): 0.274, 0.234,
  # 0.276 for seeds 0, 1, 2; chance is 0.10.
  root = tmp_path / 'imagenet_layout'
  _cifar10_as_image_folders(root, 200, 50)
  summary = _run('configs/resnet50_imagenet.py:tiny', tmp_path, cache,
                 '--config.data.source=files', f'--config.data.path={root}',
                 '--config.batch_size=32',
                 '--config.num_steps=300', '--config.schedule.step_size=120',
                 '--config.schedule.base_lr=0.005', '--config.schedule.max_lr=0.05',
                 '--config.eval_every_steps=300', '--config.log_every_steps=100')
  assert summary['steps'] == 300
  assert 0.17 <= summary['final_eval_accuracy'] <= 0.36


@pytest.mark.skipif(not os.path.exists(CIFAR10_ARCHIVE), reason='needs ../shared/data')
def test_bn_running_statistics_are_usable_after_100_updates_at_fraction_0999(tmp_path, cache):
  # The PC-LR baseline's BN moving-average fraction, 0.999, on a small net (ResNet-8, LR 0.05
  # held constant, 100 updates at batch 64 on 2,000 real CIFAR-10 images),
  # evaluated on the full test split. Caffe's estimator (sums over a decayed count) is exact from
  # the first update, so the evaluation must be well above chance and close to the same run at
  # fraction 0.95. (The plain EMA it replaced still carried 90 % of its mean 0 / var 1 start at
  # update 100: the H200 baseline scored 10.00 % there.) Measured here: 0.2622 at 0.999, 0.2830
  # at 0.95. At LR 0.35 the weights move so fast that even an exact average over 100 updates
  # lags them (0.1445 against 0.2736): that is the fraction's cost, not the estimator's.
  common = ('--config.data.source=files', f'--config.data.path={CIFAR10_ARCHIVE}',
            '--config.model.name=resnet8', '--config.data.train_subset=2000',
            '--config.batch_size=64', '--config.model.virtual_batch_size=0',
            '--config.num_steps=100', '--config.schedule.name=constant',
            '--config.schedule.base_lr=0.05',
            '--config.eval_every_steps=100', '--config.log_every_steps=50')
  slow = _run('configs/resnet56_baseline.py', tmp_path / 'maf0999', cache, *common)
  fast = _run('configs/resnet56_baseline.py', tmp_path / 'maf095', cache, *common,
              '--config.model.bn_momentum=0.95')
  assert slow['final_eval_accuracy'] >= 0.18, slow
  assert abs(slow['final_eval_accuracy'] - fast['final_eval_accuracy']) <= 0.06, (slow, fast)
