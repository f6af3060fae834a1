"""Two processes x 2 CPU devices, joined by jax.distributed, train like one process x 4 devices.

The job is launched as on a GPU cluster: every process runs the same CLI command with
`--config.distributed.coordinator_address=127.0.0.1:PORT --config.distributed.num_processes=2
--config.distributed.process_id=i`. Cross-process collectives on the CPU go through gloo (JAX
0.10's default `jax_cpu_collectives_implementation`). Both processes share one workdir, as hosts
of a pod slice share a bucket or NFS folder: orbax writes each checkpoint collectively into the
same directory (every process its own part, process 0 the metadata), and only process 0 writes
metrics.jsonl, config.json and summary.json.

The run is cut at update 4 (`stop_after_steps`) and resumed to 8 by a second launch, so the
collective restore is exercised too. Reference: the same config trained in this pytest process on
its 4 CPU devices (conftest), the same global batch. ~60-80 s on 2 cores (three compilations).
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration  # 2-process jobs

SETS = ('--config.progress_bar=False', '--config.schedule.max_lr=0.5')
NUM_PROCESSES = 2


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def launch_job(workdir: str, *extra: str, timeout: float = 240,
               config: str = 'configs/resnet56.py:tiny',
               env_of: dict[int, dict] | None = None) -> list[str]:
  """Runs the 2-process job to completion; returns each process's output. `env_of[i]`: extra
  environment of process i only."""
  port = free_port()
  env = dict(os.environ)
  # The processes get 2 devices each from JAX_NUM_CPU_DEVICES; a device-count flag in XLA_FLAGS
  # would fight it. The other flags (conftest's convolution path) stay, as in the reference.
  env['XLA_FLAGS'] = ' '.join(f for f in env.get('XLA_FLAGS', '').split()
                              if 'force_host_platform_device_count' not in f)
  env.update(JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='2', PYTHONUNBUFFERED='1')
  procs = [
      subprocess.Popen(
          [sys.executable, '-m', 'superconv.main', f'--config={config}',
           f'--workdir={workdir}', *SETS, *extra,
           f'--config.distributed.coordinator_address=127.0.0.1:{port}',
           f'--config.distributed.num_processes={NUM_PROCESSES}',
           f'--config.distributed.process_id={i}'],
          cwd=ROOT, env={**env, **(env_of or {}).get(i, {})}, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True)
      for i in range(NUM_PROCESSES)]
  deadline = time.monotonic() + timeout
  outputs = []
  try:
    for p in procs:
      # A process whose peer died waits for it until the coordinator gives up: bound the wait.
      out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
      outputs.append(out)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f'process {i} exited with {p.returncode}:\n{out[-4000:]}'
  return outputs


def restore_on_one_device(path: str) -> dict:
  """A checkpoint's whole state as saved, placed on one device whatever topology wrote it."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.StandardCheckpointer()
  meta = checkpointer.metadata(path)
  meta = getattr(meta, 'item_metadata', meta)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
  return checkpointer.restore(path, target)


def read_rows(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# Quantities that are pure functions of the update counter: equal to the last bit.
EXACT_KEYS = ('step', 'lr', 'momentum')
# Accuracies count images, so a reduction-order difference moves them by whole images.
COUNT_KEYS = ('train_accuracy', 'eval_accuracy')


# The floor of the allowed relative difference. Eight updates of this chaotic map (BN over
# 4-16 images at a high LR) amplify float32's unit roundoff (6e-8) by up to ~1e5: seen 5.6e-4
# of grad_norm at update 6 (an Intel Xeon), 2.4e-3 of a momentum buffer's scale after update 8
# (an AMD EPYC). A wrong shard, key or gradient changes the gradients themselves (order 1 of
# their size) from the first update on.
FLOOR = 1e-2


def assert_same_rows(multi: str, single: str, other_order: str) -> None:
  """The job's metrics.jsonl rows equal the single process's, up to the reduction order.

  The two programs sum the same float32 numbers in different orders (gloo across processes
  against an in-process all-reduce), and through BN and a high LR those last-bit differences
  grow from update to update by an amount that depends on the CPU. The allowed difference of
  each quantity is 10x what a second reduction order moves it (`other_order`: the same training
  in one process on a mesh of another size with the same BN groups, i.e. the same computation
  summed in another order) or FLOOR of its size, whichever is larger; accuracies may also move
  by 2 % of their images. Quantities that are functions of the update counter must be equal.
  """
  rows = {name: read_rows(os.path.join(path, 'metrics.jsonl'))
          for name, path in (('multi', multi), ('single', single), ('other', other_order))}
  # One row per log point: a second writer would have duplicated them.
  assert [r['step'] for r in rows['multi']] == [r['step'] for r in rows['single']] == [2, 4, 6, 8]
  floats = rows['single'][0].keys() - {'images_per_sec', *EXACT_KEYS}
  spread = {k: max(abs(o[k] - s[k]) / max(abs(s[k]), 1e-12)
                   for o, s in zip(rows['other'], rows['single']) if k in s) for k in floats}
  for m, s in zip(rows['multi'], rows['single']):
    assert m.keys() == s.keys()
    for key in EXACT_KEYS:
      assert m[key] == s[key], (m['step'], key)
    for key in floats & m.keys():
      tol = max(10 * spread[key], FLOOR) * abs(s[key]) + 1e-6 + (0.02 if key in COUNT_KEYS else 0)
      assert abs(m[key] - s[key]) <= tol, (m['step'], key, m[key], s[key], spread[key])


def train_in_process(config, workdir: str, num_devices: int) -> None:
  """The reference: this pytest process's first `num_devices` CPU devices (conftest has 4)."""
  import jax  # pylint: disable=g-import-not-at-top
  from superconv import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(config, workdir, devices=jax.devices()[:num_devices])


def test_two_processes_match_one_and_resume(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from configs import resnet56  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 4  # the reference: one process, the same 4-device mesh

  shared = str(tmp_path / 'shared')
  first = launch_job(shared, '--config.stop_after_steps=4', '--config.model.virtual_batch_size=4')
  assert 'process 0 of 2, 2 local / 4 global devices' in first[0]
  assert 'process 1 of 2, 2 local / 4 global devices' in first[1]
  assert [r['step'] for r in read_rows(os.path.join(shared, 'metrics.jsonl'))] == [2, 4]
  second = launch_job(shared, '--config.model.virtual_batch_size=4')
  assert 'Resumed from the checkpoint at update 4' in second[0] + second[1]
  # Only process 0 prints the summary line (and writes the files).
  assert sum('"final_eval_accuracy"' in out for out in second) == 1

  config = resnet56.get_config('tiny')
  config.progress_bar, config.schedule.max_lr = False, 0.5
  config.model.virtual_batch_size = 4  # = the per-device batch on 4 devices: no change there
  single, other = str(tmp_path / 'single'), str(tmp_path / 'other')
  train_in_process(config, single, 4)
  train_in_process(config, other, 2)  # 8 images per device in BN groups of 4: the same math

  assert_same_rows(shared, single, other)
  summary = json.load(open(os.path.join(shared, 'summary.json')))
  assert (summary['process_count'], summary['resumed_from'], summary['steps']) == (2, 4, 8)
  assert summary['devices'].startswith('4 x ')

  # The checkpoints were written collectively: one directory, a part from each process, and it
  # restores in a single process to the state that process trained itself.
  ckpt = os.path.join(shared, 'checkpoints', '8', 'default')
  assert {f'ocdbt.process_{i}' for i in range(NUM_PROCESSES)} <= set(os.listdir(ckpt))
  multi_state, single_state, other_state = (
      restore_on_one_device(os.path.join(d, 'checkpoints', '8', 'default'))
      for d in (shared, single, other))
  assert int(multi_state['step']) == 8
  # As for the rows, array by array at the array's scale (an element of a sum of cancelling
  # terms can land near zero, its error cannot).
  for a, b, c in zip(*(jax.tree.leaves(s) for s in (multi_state, single_state, other_state))):
    a, b, c = (np.asarray(t, np.float64) for t in (a, b, c))
    scale = np.max(np.abs(b), initial=0)
    tol = max(10 * np.max(np.abs(c - b), initial=0), FLOOR * scale) + 1e-6
    assert np.max(np.abs(a - b), initial=0) <= tol, (a, b, tol)


def test_a_signal_to_one_process_stops_every_process_at_the_same_update(tmp_path):
  """Preempted spot capacity may tell one host only: SIGTERM to process 1 alone, right after
  update 3. Both processes learn it at the next check (a log point: updates 2, 4, ...), save one
  collective checkpoint at update 4 and exit cleanly; the same command resumes both to the end."""
  from superconv.train import SIGNAL_AT_STEP_ENV  # pylint: disable=g-import-not-at-top
  shared = str(tmp_path / 'shared')
  first = launch_job(shared, env_of={1: {SIGNAL_AT_STEP_ENV: '3:SIGTERM'}})
  assert 'Received SIGTERM: saved a checkpoint at update 4 of 8' in first[1]
  assert 'Received a stop signal (on another process): saved a checkpoint at update 4' in first[0]
  assert sorted(os.listdir(os.path.join(shared, 'checkpoints'))) == ['4']
  assert not os.path.exists(os.path.join(shared, 'summary.json'))
  second = launch_job(shared)
  assert all('Resumed from the checkpoint at update 4' in out for out in second)
  summary = json.load(open(os.path.join(shared, 'summary.json')))
  assert (summary['resumed_from'], summary['steps']) == (4, 8)


def test_two_processes_stream_imagenet_like_one_process(tmp_path):
  """Streamed input (ImageNet smoke: generated images, crops on each host): each process reads
  half of every global batch; cut at update 4 and resumed, the job logs what one process with
  the same 4 devices logs."""
  from configs import resnet50_imagenet  # pylint: disable=g-import-not-at-top
  config_arg = 'configs/resnet50_imagenet.py:tiny'
  # 16 images per device and a small LR: with the smoke batch (4 per device, BN over 1x1 maps in
  # the last stage) and the 1cycle peak this 1000-class model is chaotic, and the two reduction
  # orders (gloo across processes, in-process on one) part after a few updates. The input path
  # is what is tested, so the model is the CIFAR ResNet-8 (1000-way head, 32 x 32 inputs): it
  # compiles in a fraction of the ImageNet ResNet's time, four times over in this test.
  lr = ('--config.schedule.base_lr=0.0005', '--config.schedule.max_lr=0.01',
        '--config.batch_size=64', '--config.model.virtual_batch_size=16',
        '--config.model.name=resnet8')
  shared = str(tmp_path / 'shared')
  first = launch_job(shared, '--config.stop_after_steps=4', *lr, config=config_arg)
  assert 'imagenet2012 streamed input' in first[0] + first[1]
  second = launch_job(shared, *lr, config=config_arg)
  assert 'Resumed from the checkpoint at update 4' in second[0] + second[1]

  config = resnet50_imagenet.get_config('tiny')
  config.progress_bar, config.schedule.base_lr, config.schedule.max_lr = False, 0.0005, 0.01
  config.batch_size, config.model.virtual_batch_size = 64, 16
  config.model.name = 'resnet8'
  single, other = str(tmp_path / 'single'), str(tmp_path / 'other')
  train_in_process(config, single, 4)
  train_in_process(config, other, 2)  # 32 images per device in BN groups of 16: the same math
  assert_same_rows(shared, single, other)


@pytest.mark.parametrize('mode,expected', [('auto', 'joined=False processes=1'),
                                           ('never', 'joined=False processes=1'),
                                           ('always', 'ValueError')])
def test_distributed_auto_runs_alone_where_no_cluster_is_detected(mode, expected):
  # This machine is no TPU VM, SLURM or MPI job: 'auto' must run as one process, 'always' must
  # say that it found no cluster. In a fresh interpreter (initialize must precede any backend).
  code = ('import ml_collections, jax\n'
          'from superconv.sharding import initialize_distributed\n'
          f'd = ml_collections.ConfigDict(dict(initialize={mode!r}, coordinator_address="", '
          'num_processes=0, process_id=-1))\n'
          'try:\n'
          '  print(f"joined={initialize_distributed(d)} processes={jax.process_count()}")\n'
          'except ValueError as e:\n'
          '  print("ValueError", e)\n')
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('SLURM_', 'OMPI_', 'TPU_', 'JAX_COORDINATOR', 'PMI_'))}
  env.update(JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
  assert expected in out.stdout, out.stdout + out.stderr[-2000:]
