"""The device mesh, placement of host arrays on it, and joining a multi-process job.

One mesh axis, 'data': every device of every process holds a replica of the state and a slice of
each batch. The helpers here are the only place that names the axis or builds a sharding.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

AXIS = 'data'

# What `jax.distributed.initialize()` raises when none of JAX's cluster detectors (Cloud TPU
# metadata, GKE, SLURM, Open MPI, Kubernetes) recognises the environment: a single-process run.
_NO_CLUSTER = 'coordinator_address should be defined'


def initialize_distributed(dist) -> bool:
  """Joins a multi-process job; returns whether `jax.distributed` was initialised.

  `dist` is `config.distributed`. 'auto' lets JAX detect the cluster (a Cloud TPU pod slice
  through its metadata server, GKE, SLURM, Open MPI) and runs as one process where it finds none;
  'always' requires a cluster or an address; 'never' skips it. `coordinator_address` (+
  `num_processes`, `process_id`) always initialise, as on a GPU cluster without a scheduler.
  """
  if dist.initialize == 'never':
    return False
  kwargs = {}
  if dist.coordinator_address:
    kwargs = dict(coordinator_address=dist.coordinator_address,
                  num_processes=dist.num_processes or None,
                  process_id=None if dist.process_id < 0 else dist.process_id)
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:
    if dist.initialize == 'auto' and not kwargs and _NO_CLUSTER in str(e):
      return False
    raise
  return True


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over `devices` (default: all devices of all processes)."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return jax.sharding.Mesh(devices, (AXIS,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def replicate(tree: Any, mesh) -> Any:
  """Places host arrays (identical on every process) on every device of the mesh."""
  sharding = replicated(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(put, tree)


def shard_leading(tree: Any, mesh, axis: int = 0) -> Any:
  """Places host arrays split along `axis` over the 'data' devices (eval batches)."""
  def put(x):
    x = np.asarray(x)
    spec = [None] * x.ndim
    spec[axis] = AXIS
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, P(*spec)), lambda idx: x[idx])
  return jax.tree.map(put, tree)


def batch_sharding(mesh, leading_unsharded: int = 0) -> NamedSharding:
  """Arrays split over 'data' along axis `leading_unsharded` (0: a batch; 1: [k, batch, ...])."""
  return NamedSharding(mesh, P(*([None] * leading_unsharded), AXIS))
