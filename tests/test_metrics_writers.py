"""The TensorBoard and W&B writers beside metrics.jsonl (superconv.summary_writers).

Event files are read back with TensorBoard's own loader, which checks every record's CRC, so these
tests check the hand-written encoder against the format's reference reader. W&B runs offline, and
its run file is read back through W&B's own protobuf schema.
"""

import glob
import json
import os
import struct
import sys
import time

import jax
import numpy as np
import pytest

from configs import default
from superconv import configure
from superconv import metrics
from superconv import summary_writers


def _config(**logging):
  c = default.get_config()
  for key, value in logging.items():
    if key == 'wandb':
      c.logging.wandb.update(value)
    else:
      c.logging[key] = value
  return c


def _rows(steps, *, scale=1.0, eval_every=2):
  """Rows shaped like train.py's: eval keys only on every `eval_every`-th row."""
  out = []
  for i, step in enumerate(steps):
    row = {'step': step, 'lr': 0.1 * scale * step, 'momentum': 0.95 - 0.001 * step,
           'train_loss': scale * 2.3 / step, 'train_accuracy': 0.1 + 0.01 * step,
           'grad_norm': 1.7 * scale, 'param_norm': 40.0 + step, 'images_per_sec': 1234.5}
    if (i + 1) % eval_every == 0:
      row.update(eval_loss=scale * 2.0 / step, eval_accuracy=0.5 + 0.001 * step,
                 eval_examples=10_000)
    out.append(row)
  return out


def _scalars(logdir):
  """{tag: [(step, value), ...]} as TensorBoard's loader shows them (restarts purged)."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(logdir)
  acc.Reload()
  return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def _expected(rows):
  out = {}
  for row in rows:
    for key, value in row.items():
      if key != 'step':
        out.setdefault(key, []).append((row['step'], float(np.float32(value))))
  return out


def test_crc32c_matches_the_reference_values():
  from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # pylint: disable=g-import-not-at-top
  assert summary_writers.crc32c(b'123456789') == 0xE3069283   # the CRC-32C check value
  for data in (b'', b'a', bytes(range(256)) * 3):
    masked = struct.unpack('<I', summary_writers._masked_crc(data))[0]  # pylint: disable=protected-access
    assert masked == pywrap_tensorflow.masked_crc32c(data)


def test_every_numeric_field_reaches_tensorboard_at_its_step(tmp_path):
  rows = _rows([100, 200, 300, 400])
  rows[0]['grad_norm'] = np.float32(1.25)       # numpy and jax scalars are numbers too
  rows[1]['param_norm'] = jax.numpy.asarray(41.5)
  rows[2]['note'] = 'not a number'              # skipped, like lists and flags
  rows[2]['per_class'] = [0.1, 0.2]
  writer = summary_writers.open_writers(_config(), str(tmp_path), resume_step=None)
  for row in rows:
    writer.write(row)
  writer.close()

  got = _scalars(str(tmp_path / 'tensorboard'))
  clean = [{k: v for k, v in r.items() if k not in ('note', 'per_class')} for r in rows]
  assert got == _expected(clean)
  assert set(got) == {'lr', 'momentum', 'train_loss', 'train_accuracy', 'grad_norm', 'param_norm',
                      'images_per_sec', 'eval_loss', 'eval_accuracy', 'eval_examples'}
  assert [s for s, _ in got['eval_accuracy']] == [200, 400]
  # metrics.jsonl is still written, as before.
  jsonl = list(metrics.read_jsonl(str(tmp_path / 'metrics.jsonl')))
  assert [r['step'] for r in jsonl] == [100, 200, 300, 400]
  assert jsonl[2]['note'] == 'not a number'


def test_each_row_is_on_disk_once_written(tmp_path):
  writer = summary_writers.open_writers(_config(), str(tmp_path))
  writer.write(_rows([10])[0])
  # Not closed: what a crash right now would leave behind.
  assert _scalars(str(tmp_path / 'tensorboard'))['lr'] == [(10, float(np.float32(1.0)))]
  writer.close()


def test_resume_shows_the_restored_rows_then_the_new_ones(tmp_path):
  workdir = str(tmp_path)
  first = _rows(range(1, 7))            # the interrupted run logged up to update 6 ...
  writer = summary_writers.open_writers(_config(), workdir, resume_step=0)
  for row in first:
    writer.write(row)
  writer.close()
  # ... but its last checkpoint was at update 3: the resumed run replays 4-8 (other values here,
  # so that a leftover from the interrupted run would show).
  writer = summary_writers.open_writers(_config(), workdir, resume_step=3)
  assert writer.rows == first[:3]
  second = _rows(range(4, 9), scale=3.0)
  for row in second:
    writer.write(row)
  writer.close()

  assert len(glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*'))) == 2
  kept = first[:3] + second
  assert _scalars(os.path.join(workdir, 'tensorboard')) == _expected(kept)
  assert list(metrics.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))) == kept


def test_a_restart_from_scratch_hides_the_whole_earlier_attempt(tmp_path):
  workdir = str(tmp_path)
  with summary_writers.open_writers(_config(), workdir) as writer:
    for row in _rows([1, 2, 3]):
      writer.write(row)
  with summary_writers.open_writers(_config(), workdir, resume_step=None) as writer:
    new = _rows([1, 2], scale=5.0)
    for row in new:
      writer.write(row)
  assert _scalars(os.path.join(workdir, 'tensorboard')) == _expected(new)


def test_tensorboard_can_be_turned_off(tmp_path):
  with summary_writers.open_writers(_config(tensorboard=False), str(tmp_path)) as writer:
    writer.write(_rows([1])[0])
  assert not (tmp_path / 'tensorboard').exists()
  assert (tmp_path / 'metrics.jsonl').exists()


def test_only_process_zero_writes(tmp_path, monkeypatch, wandb_offline):
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  config = _config(wandb={'enabled': True, 'mode': 'offline'})
  with summary_writers.open_writers(config, str(tmp_path)) as writer:
    for row in _rows([1, 2]):
      writer.write(row)
    assert writer.rows == []
  assert os.listdir(tmp_path) == ['wandb_env']   # only the fixture's folder: nothing written


# ---------------------------------------------------------------------------------------------
# W&B (offline)

@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
  """W&B offline, with every file it writes kept under tmp_path and no network."""
  pytest.importorskip('wandb')
  env = tmp_path / 'wandb_env'
  for name in ('WANDB_DIR', 'WANDB_CONFIG_DIR', 'WANDB_CACHE_DIR', 'WANDB_DATA_DIR',
               'WANDB_ARTIFACT_DIR'):
    (env / name).mkdir(parents=True)
    monkeypatch.setenv(name, str(env / name))
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  monkeypatch.delenv('WANDB_API_KEY', raising=False)
  return env / 'WANDB_DIR'


def _wandb_records(path):
  """The protobuf records of a W&B run file (`run-<id>.wandb`).

  The file is a 7-byte header (':W&B', magic, version), then LevelDB-log framing: 32 KiB blocks
  of chunks, each with a 7-byte header (CRC, length, type: 1 full, 2 first, 3 middle, 4 last).
  """
  from wandb.proto import wandb_internal_pb2  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:4] == b':W&B'
  records, pending, pos, block = [], b'', 7, 32768
  while pos + 7 <= len(data):
    if block - pos % block < 7:           # a block's tail too short for a header is padding
      pos += block - pos % block
      continue
    length, kind = struct.unpack('<HB', data[pos + 4:pos + 7])
    pending += data[pos + 7:pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      records.append(record)
      pending = b''
  return records


def _key(item):
  return item.key or '/'.join(item.nested_key)   # W&B fills one or the other


def _wandb_history(run_dir, timeout=20.0):
  """({step: logged values}, run config) of an offline run, once W&B has written all of it."""
  (path,) = glob.glob(os.path.join(run_dir, 'run-*.wandb'))
  # W&B's service process writes the file on its own schedule; `finish()` can return before it
  # has. The run is complete once its `exit` record is there.
  deadline = time.monotonic() + timeout
  records = _wandb_records(path)
  while not any(r.WhichOneof('record_type') == 'exit' for r in records):
    assert time.monotonic() < deadline, f'{path}: no exit record after {timeout} s'
    time.sleep(0.1)
    records = _wandb_records(path)
  history, config = {}, {}
  for record in records:
    kind = record.WhichOneof('record_type')
    if kind == 'history':
      items = {_key(i): json.loads(i.value_json) for i in record.history.item}
      step = items.pop('_step')
      history[step] = {k: v for k, v in items.items() if not k.startswith('_')}
    elif kind == 'run':
      config.update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
    elif kind == 'config':
      config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
  return history, config


def test_wandb_offline_logs_every_row_and_resumes_the_same_run(tmp_path, wandb_offline):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  config = _config(wandb={'enabled': True, 'mode': 'offline', 'name': 'test-run'})
  rows = _rows([10, 20, 30])
  with summary_writers.open_writers(config, str(workdir), resume_step=0) as writer:
    for row in rows:
      writer.write(row)
  run_id = (workdir / summary_writers.WANDB_RUN_ID_FILE).read_text().strip()
  (run_dir,) = glob.glob(str(wandb_offline / 'wandb' / f'offline-run-*-{run_id}'))
  history, logged_config = _wandb_history(run_dir)
  assert history == {r['step']: {k: v for k, v in r.items() if k != 'step'} for r in rows}
  assert logged_config['schedule']['name'] == config.schedule.name   # the run config is the config
  assert logged_config['logging']['wandb']['mode'] == 'offline'

  # A resume reads the id back and continues that run. W&B names an offline run's folder by the
  # second it starts: a resume within the same second as the first run would share its folder
  # (and file) in W&B itself, which a real resume, minutes or days later, never does.
  time.sleep(1.0 - time.time() % 1.0 + 0.05)
  with summary_writers.open_writers(config, str(workdir), resume_step=30) as writer:
    assert writer.writers[-1].run_id == run_id
    writer.write(_rows([40])[0])
  assert (workdir / summary_writers.WANDB_RUN_ID_FILE).read_text().strip() == run_id
  pattern = str(wandb_offline / 'wandb' / f'offline-run-*-{run_id}')

  def logged_steps():
    steps = set()
    for run in glob.glob(pattern):
      if glob.glob(os.path.join(run, 'run-*.wandb')):
        steps |= set(_wandb_history(run)[0])
    return steps

  # W&B may put a resumed offline run in a new folder of the same id, which its service process
  # creates on its own schedule: `finish()` can return before the folder exists.
  deadline = time.monotonic() + 20.0
  while 40 not in (steps := logged_steps()):
    assert time.monotonic() < deadline, f'update 40 never reached W&B (logged: {sorted(steps)})'
    time.sleep(0.2)
  assert steps == {10, 20, 30, 40}
  assert len(glob.glob(pattern)) in (1, 2)


def test_missing_wandb_is_one_line_naming_the_extra(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'wandb', None)   # `import wandb` now fails as if not installed
  config = _config(wandb={'enabled': True})
  with pytest.raises(summary_writers.LoggingConfigError) as err:
    summary_writers.open_writers(config, str(tmp_path))
  message = str(err.value)
  assert 'pip install "superconv[wandb]"' in message and '\n' not in message
  assert os.listdir(tmp_path) == []   # raised before anything was written
  # The run's config check reports it the way main.py reports config mistakes (one line, exit 2).
  with pytest.raises(configure.ConfigError, match=r'superconv\[wandb\]'):
    configure.validate(config)
  configure.validate(_config())   # W&B off: no package needed


def test_a_bad_wandb_mode_is_refused(tmp_path):
  with pytest.raises(summary_writers.LoggingConfigError, match='logging.wandb.mode'):
    summary_writers.open_writers(_config(wandb={'enabled': True, 'mode': 'cloud'}), str(tmp_path))
