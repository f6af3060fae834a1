"""Test set-up: four virtual CPU devices, so data-parallel code runs on a real multi-device mesh."""

import os
import sys

import jax

# Must run before any JAX backend starts: every test sees 4 CPU devices.
jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_platforms', 'cpu')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
SHARED_DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data')
CIFAR10_ARCHIVE = os.path.join(SHARED_DATA, 'cifar10-jpeg.tar.gz')
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'

# tests/data holds committed reference values and the scripts that made them (make_onecycle_torch.py
# needs torch, which the `test` extra does not install): data, not tests.
collect_ignore_glob = ['data/*']
