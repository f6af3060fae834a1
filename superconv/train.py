"""The training program: `train_and_evaluate(config, workdir)`.

The loop around the engine (`superconv.step`, `superconv.inputs`): resume from the latest
checkpoint, train, log a metrics row every `log_every_steps`, evaluate every
`eval_every_steps`, checkpoint every `checkpoint_every_steps` and on preemption (SIGTERM /
SIGINT), stop with a clear message when the loss or gradient diverges, and write summary.json.
Imported only by the entry points (`superconv.programs`) and its tests.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import time

from absl import logging
import jax
import ml_collections

from superconv import checkpoint as ckpt_lib
from superconv import metrics as metrics_lib
from superconv import setup as setup_lib
from superconv import step as step_lib
from superconv import storage
from superconv import summary_writers
from superconv import workdir as workdir_lib
from superconv.data import sources


# The test hook that lands a signal on an exact update lives with the signal handler.
SIGNAL_AT_STEP_ENV = ckpt_lib.SIGNAL_AT_STEP_ENV


# A one-element array computed from this process's first shard of a dispatch's output: ready
# when that dispatch is done. (The output itself is donated to the next dispatch, after which it
# cannot be asked; one shard on one device keeps the marker free of collectives.)
_done_token = jax.jit(lambda leaf: leaf.ravel()[:1])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the summary.

  `config` is resolved (`configure.resolve`, as `programs.run` does). `devices`: the devices of
  the mesh (default: every device of every process). The workdir is claimed first
  (`superconv.workdir`: one writer, and its config.json is this run's).
  """
  t_start = time.perf_counter()
  with workdir_lib.claim(config, workdir) as run:
    return _train(config, workdir, run, devices, t_start)


def _train(config, workdir, run, devices, t_start) -> dict:
  is_main = jax.process_index() == 0
  # Mesh, data (bad data fails here, before a checkpoint folder or a compile), model, optimizer.
  setup = setup_lib.build(config, workdir, devices=devices)
  k = step_lib.dispatch_size(config)
  logging.info('%d devices (%s); %d updates per dispatch; model %s; %s %s input.',
               setup.mesh.devices.size, jax.devices()[0].device_kind, k, config.model.name,
               config.data.name, 'streamed' if setup.spec.streamed else 'in-memory')
  checkpointer = setup.checkpointer
  state, start_step = checkpointer.restore_latest(setup.abstract_state())
  run.record_config()  # config.json (and a change's history line): the checkpoints fit it
  num_steps = config.num_steps
  if config.stop_after_steps:
    num_steps = min(num_steps, int(config.stop_after_steps))
  summary_path = os.path.join(workdir, 'summary.json')
  if state is not None and start_step >= num_steps and storage.path(summary_path).exists():
    # A finished run: its summary (timings included) stays as the run wrote it.
    checkpointer.close()
    msg = (f'{workdir} holds a finished run (update {start_step} of {num_steps}); nothing to '
           'do, summary.json unchanged. Use a new --workdir for a new run.')
    logging.info(msg)
    if is_main:
      print(msg, flush=True)
    return json.loads(storage.path(summary_path).read_text())
  if state is None:
    state, start_step = setup.init(), 0
  else:
    logging.info('Resumed from the checkpoint at update %d.', start_step)
  # metrics.jsonl, TensorBoard event files and (if configured) W&B, from one call.
  writer = summary_writers.open_writers(config, workdir, resume_step=start_step)
  with contextlib.closing(writer), contextlib.closing(checkpointer):
    return _loop(config, setup, k, state, start_step, num_steps, writer, workdir, t_start)


def _loop(config, setup, k, state, start_step, num_steps, writer, workdir, t_start) -> dict:
  """The updates from `start_step` to `num_steps`, with rows, evaluations and checkpoints."""
  is_main = jax.process_index() == 0
  mesh, model, tx, spec, checkpointer = (setup.mesh, setup.model, setup.tx, setup.spec,
                                         setup.checkpointer)
  feed, evaluator = setup.inputs.feed(mesh, start_step, k), setup.inputs.evaluator(model, mesh,
                                                                                     spec)
  t = time.perf_counter()
  # Between boundaries the loop holds the state packed on accelerators (a few flat buffers: the
  # dispatch cost of a call grows with the number of arrays passed, 568 for ResNet-56); it is
  # unpacked only where the pytree is read (evaluation, checkpoint), and log rows read a few
  # scalars from it. On the CPU `packed` is the pytree itself (`step.packs_by_default`).
  use_packed = step_lib.packs_by_default()
  packed, state = step_lib.hold(state, use_packed), None  # state: the pytree, made when needed
  train_fn = step_lib.make_train_fn(model, tx, mesh, spec, k, packed=use_packed).lower(
      packed, feed.example()).compile()
  compile_seconds = time.perf_counter() - t
  evaluator.compile(step_lib.as_state(packed))
  compile_seconds += evaluator.compile_seconds
  logging.info('Compiled in %.1f s.', compile_seconds)

  # The evaluations before a resume count for the best accuracy of the run.
  evals = [(r['step'], r['eval_accuracy']) for r in writer.rows if 'eval_accuracy' in r]
  step = start_step
  train_seconds = eval_seconds = 0.0
  images_done = 0
  window_start, window_images, window_paused = time.perf_counter(), 0, 0.0
  bar = None
  if is_main and config.progress_bar:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=num_steps, initial=step, unit='step', dynamic_ncols=True,
                    desc=config.model.name)
  # Dispatched calls whose updates may still run on the device: (update after it, an output).
  # The bar counts completed updates; a signal is told how many are still queued.
  queued = collections.deque()
  done = [start_step]

  def completed() -> int:
    while queued and queued[0][1].is_ready():
      done[0] = queued.popleft()[0]
    if bar is not None and done[0] > bar.n:
      bar.update(done[0] - bar.n)
    return done[0]

  def on_signal(name: str) -> str:
    finished = completed()
    where = ('after this dispatch' if jax.process_count() == 1 else 'at the next log row')
    return (f'superconv: received {name}: the {step - finished} updates queued on the device '
            f'finish first (to update {step}), then a checkpoint is saved {where}; press '
            'Ctrl-C again to abort without saving.')

  def boundary(every):
    return bool(every) and step % every == 0

  def stop_if_diverged(sums, row=None):
    if int(sums['nonfinite_step']) < 0:
      return
    if bar is not None:
      bar.close()
    if row:  # the row that found it: its sums hold the non-finite values
      writer.write({**row, 'diverged_at': int(sums['nonfinite_step'])})
    saved = checkpointer.steps()
    kept = (f' The last good checkpoint is update {saved[-1]} in {checkpointer.directory}.'
            if saved else ' No checkpoint was saved before it.')
    raise step_lib.TrainingDiverged(step_lib.divergence_message(sums) + kept)

  preempted = ''

  def unpacked():
    nonlocal state
    if state is None:
      state = step_lib.as_state(packed)
    return state

  # Closing the feed stops its reader threads however the loop ends.
  with ckpt_lib.PreemptionFlag(on_signal) as flag, contextlib.closing(feed):
    while step < num_steps:
      packed, state = train_fn(packed, next(feed)), None
      step += k
      queued.append((step, _done_token(jax.tree.leaves(packed)[0].addressable_shards[0].data)))
      flag.test_hook(step)
      window_images += k * config.batch_size
      completed()
      row = {}
      last = step >= num_steps
      if boundary(config.log_every_steps) or last:
        logged = jax.device_get(step_lib.log_values(packed))
        sums = logged['sums']
        elapsed = time.perf_counter() - window_start - window_paused
        train_seconds += elapsed
        images_done += window_images
        hp = logged['hyperparams']
        n = max(int(sums['steps']), 1)
        row.update(step=step, lr=float(hp['learning_rate']), momentum=float(hp['momentum']),
                   train_loss=float(sums['loss']) / n,
                   train_accuracy=float(sums['correct']) / max(float(sums['count']), 1.0),
                   grad_norm=float(sums['grad_norm']), param_norm=float(sums['param_norm']),
                   images_per_sec=window_images / max(elapsed, 1e-9))
        stop_if_diverged(sums, row)
        if 'lr_estimate' in logged:
          row.update(lr_estimate=float(logged['lr_estimate']['estimate']),
                     lr_estimate_ema=float(logged['lr_estimate']['estimate_ema']))
        packed, state = step_lib.reset_sums(packed), None
        completed()
        if bar is not None:
          bar.set_postfix(lr=f"{row['lr']:.3g}", loss=f"{row['train_loss']:.3f}",
                          img_s=f"{row['images_per_sec']:.0f}", refresh=False)
        elif is_main:
          logging.info('update %d/%d: lr %.4g, momentum %.3g, train loss %.4f, accuracy %.4f, '
                       '%.0f images/s', step, num_steps, row['lr'], row['momentum'],
                       row['train_loss'], row['train_accuracy'], row['images_per_sec'])
        window_start, window_images, window_paused = time.perf_counter(), 0, 0.0
      paused_from = time.perf_counter()
      if boundary(config.eval_every_steps) or last:
        t = time.perf_counter()
        row.update(step=step, **evaluator(unpacked()))
        eval_seconds += time.perf_counter() - t
        evals.append((step, row['eval_accuracy']))
        line = (f"update {step}/{num_steps}: eval accuracy {row['eval_accuracy']:.4f}, "
                f"loss {row['eval_loss']:.4f}")
        if bar is not None:
          bar.write(line)
        elif is_main:
          logging.info(line)
      if row:
        writer.write(row)
      # Asking every process is a collective; on one process it is free, on many do it per log.
      check = jax.process_count() == 1 or boundary(config.log_every_steps)
      if not last and not preempted and check and flag.is_set(step):
        preempted = flag.signal_name
      if boundary(config.checkpoint_every_steps) or last or preempted:
        stop_if_diverged(jax.device_get(unpacked().sums))  # never checkpoint a diverged state
        writer.flush()  # on an object store: the rows up to this checkpoint, before it exists
        checkpointer.save(step, unpacked())  # the readable pytree layout, as before
      if preempted:
        break
      window_paused += time.perf_counter() - paused_from
  if bar is not None:
    bar.close()

  if preempted:
    msg = (f'Received {preempted}: saved a checkpoint at update {step} of {num_steps} in '
           f'{checkpointer.directory}. Run the same command again to resume.')
    logging.warning(msg)
    print(msg, flush=True)
    return {'preempted': True, 'step': step}

  best_step, best_acc = max(evals, key=lambda e: e[1]) if evals else (None, None)
  summary = {
      'final_eval_accuracy': evals[-1][1] if evals else None,
      'best_eval_accuracy': best_acc, 'best_step': best_step,
      'steps': step, 'resumed_from': start_step or None,
      'wall_seconds': time.perf_counter() - t_start,
      'train_seconds': train_seconds, 'eval_seconds': eval_seconds,
      'compile_seconds': compile_seconds,
      'images_per_sec': images_done / max(train_seconds, 1e-9),
      'config': config.model.name + ' / ' + config.schedule.name,
      **metrics_lib.provenance(),
  }
  metrics_lib.write_json(os.path.join(workdir, 'summary.json'), summary)
  if is_main:
    print(json.dumps({k: summary[k] for k in ('final_eval_accuracy', 'best_eval_accuracy',
                                               'steps', 'wall_seconds', 'images_per_sec')}))
    if config.data.source == 'fake' and evals:
      print(_generated_data_note(config, evals[-1][1]), flush=True)
  return summary


def _generated_data_note(config: ml_collections.ConfigDict, accuracy: float) -> str:
  """What a run on generated images showed, and the command that trains on real data."""
  chance = 1 / sources.num_classes(config.data.name)
  return (
      f'This was a check on generated images ({config.model.name}, {config.num_steps} updates): '
      f'it ended at {accuracy:.1%} test accuracy against {chance:.0%} for chance, so the '
      'pipeline, model, optimizer and schedule work on this machine. Next, the paper\'s Fig. 1a '
      'run on real CIFAR-10 (a GPU or TPU is advised), with TensorFlow Datasets (it downloads '
      'CIFAR-10 on first use):\n'
      '  python -m superconv.main --config=configs/resnet56.py --workdir=runs/resnet56\n'
      'or from a local copy (a .tar.gz/.zip archive or a folder: image folders, CIFAR python '
      'pickles), e.g.:\n'
      '  python -m superconv.main --config=configs/resnet56.py:data=PATH/cifar10-jpeg.tar.gz '
      '--workdir=runs/resnet56')
