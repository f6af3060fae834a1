r"""XLA:CPU against PyTorch one convolution at a time; a ResNet-20 update's time; scan/unroll.

  python -m research.cpu_perf.convs              # per-convolution table -> results/convs_cpu.json
  python -m research.cpu_perf.convs --breakdown  # per-op profile of a ResNet-20 update
  python -m research.cpu_perf.convs --scan       # 1 update per call vs lax.scan (unroll)
  python -m research.cpu_perf.convs --toy        # tiny shapes, 1 repetition (tests)

Per-convolution table: forward, input gradient and weight gradient of every distinct convolution of
ResNet-20 (3x3, 'SAME', the three stage shapes) and Caffe LeNet (5x5 'VALID'), in GFLOP/s
(2*N*Ho*Wo*Cout*Cin*kh*kw per op; the three ops have the same count). Columns: JAX with XLA's
default flags, JAX with `superconv.platform.YNN_OFF` (YNNPACK convolutions off, XLA's own
kernels on), and PyTorch (aten's
convolution and `convolution_backward`, the kernels autograd calls) in NCHW-contiguous and
channels_last layouts. XLA reads `XLA_FLAGS` once, when JAX starts, so each JAX variant and PyTorch
run in their own subprocess (this script with `--child`), interleaved `--reps` times (default A B T
A B T ...); each cell is the median over the repetitions of the median time per call.

The breakdown profiles the compiled update with `jax.profiler` (XLA:CPU records one trace event per
thunk, named after its HLO instruction) and sorts the thunks of the optimised HLO into classes:
convolutions (forward, input gradient, weight gradient), the transposes/copies XLA adds around
them, BatchNorm, other elementwise/reduction work of the model and loss, and the optimizer (ops
outside the model's jvp/transpose). The step is built here from `superconv.models` and optax
(SGD momentum 0.9, weight decay 1e-4, BatchNorm statistics mutable), not from `superconv.train`.

The machine is shared: every result records `uptime` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import machine
from superconv import platform

VARIANTS = {'default': '', 'ynn_off': platform.YNN_OFF}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name, batch, H, W, Cin, Cout, kernel, padding ('SAME' | 'VALID')
SHAPES = (
    ('resnet 32x32x16', 128, 32, 32, 16, 16, 3, 'SAME'),
    ('resnet 16x16x32', 128, 16, 16, 32, 32, 3, 'SAME'),
    ('resnet 8x8x64', 128, 8, 8, 64, 64, 3, 'SAME'),
    ('lenet conv1 28x28 1->20', 512, 28, 28, 1, 20, 5, 'VALID'),
    ('lenet conv2 12x12 20->50', 512, 12, 12, 20, 50, 5, 'VALID'),
)
TOY_SHAPES = (
    ('resnet toy 8x8x4', 4, 8, 8, 4, 4, 3, 'SAME'),
    ('lenet toy 12x12 1->3', 4, 12, 12, 1, 3, 5, 'VALID'),
)
OPS = ('fwd', 'dx', 'dw')


def _flops(shape):
  _, n, h, w, cin, cout, k, pad = shape
  ho, wo = (h, w) if pad == 'SAME' else (h - k + 1, w - k + 1)
  return 2.0 * n * ho * wo * cout * cin * k * k


def _time_call(fn, min_s):
  """Median seconds per call of `fn()` (which blocks), after one warm-up call."""
  fn()
  t = time.perf_counter()
  fn()
  first = time.perf_counter() - t
  n = max(3, min(200, int(min_s / max(first, 1e-6))))
  times = []
  for _ in range(n):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def child_jax(shapes, min_s):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  out = {}
  for shape in shapes:
    name, n, h, w, cin, cout, k, pad = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, h, w, cin), np.float32))
    kern = jnp.asarray(rng.standard_normal((k, k, cin, cout), np.float32))

    def conv(x, kern, pad=pad):
      return jax.lax.conv_general_dilated(x, kern, (1, 1), pad,
                                          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    g = jnp.ones(jax.eval_shape(conv, x, kern).shape, jnp.float32)
    fns = {'fwd': jax.jit(conv),
           'dx': jax.jit(lambda g, kern, x=x: jax.vjp(lambda x: conv(x, kern), x)[1](g)[0]),
           'dw': jax.jit(lambda g, x, kern=kern: jax.vjp(lambda k: conv(x, k), kern)[1](g)[0])}
    args = {'fwd': (x, kern), 'dx': (g, kern), 'dw': (g, x)}
    for op in OPS:
      f, a = fns[op], args[op]
      out[f'{name}|{op}'] = _time_call(lambda f=f, a=a: jax.block_until_ready(f(*a)), min_s)
  return out


def child_torch(shapes, min_s):
  import torch  # pylint: disable=g-import-not-at-top
  out = {}
  torch.manual_seed(0)
  for shape in shapes:
    name, n, h, w, cin, cout, k, pad = shape
    p = k // 2 if pad == 'SAME' else 0
    for layout, fmt in (('channels_last', torch.channels_last),
                        ('contiguous', torch.contiguous_format)):
      x = torch.randn(n, cin, h, w).contiguous(memory_format=fmt)
      kern = torch.randn(cout, cin, k, k).contiguous(memory_format=fmt)
      with torch.no_grad():
        y = torch.nn.functional.conv2d(x, kern, padding=p)
        g = torch.ones_like(y).contiguous(memory_format=fmt)

        def bwd(mask, x=x, kern=kern, g=g, p=p):
          return torch.ops.aten.convolution_backward(g, x, kern, None, [1, 1], [p, p], [1, 1],
                                                     False, [0, 0], 1, mask)
        fns = {'fwd': lambda x=x, kern=kern, p=p: torch.nn.functional.conv2d(x, kern, padding=p),
               'dx': lambda: bwd([True, False, False]),
               'dw': lambda: bwd([False, True, False])}
        for op in OPS:
          out[f'{name}|{op}|{layout}'] = _time_call(fns[op], min_s)
  return out


def _env(variant):
  """The environment of a child: the user's XLA_FLAGS without the YNN flag, plus the variant's."""
  env = dict(os.environ)
  user = [f for f in env.get('XLA_FLAGS', '').split()
          if not f.startswith(platform.YNN_FLAG_NAME)]
  env['XLA_FLAGS'] = ' '.join(user + ([VARIANTS[variant]] if VARIANTS[variant] else []))
  env['SUPERCONV_XLA_CPU_DEFAULTS'] = '0'
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
  return env


def _run_child(kind, variant, extra):
  cmd = [sys.executable, '-m', 'research.cpu_perf.convs', '--child', kind, '--variant', variant,
         *extra]
  proc = subprocess.run(cmd, env=_env(variant), cwd=ROOT, capture_output=True, text=True,
                        check=False)
  if proc.returncode:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _torch_available():
  try:
    import torch  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def _write(path, obj):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(obj, f, indent=1)
    f.write('\n')
  print(f'wrote {path}')


def conv_table(a, command):
  shapes = TOY_SHAPES if a.toy else SHAPES
  extra = ['--min-s', str(a.min_s)] + (['--toy'] if a.toy else [])
  runs = [('jax', 'default'), ('jax', 'ynn_off')]
  if _torch_available() and not a.no_torch:
    runs.append(('torch', 'default'))
  samples = {}
  up = [machine.uptime()]
  for _ in range(a.reps):
    for kind, variant in runs:
      col = 'torch' if kind == 'torch' else f'jax {variant}'
      for key, s in _run_child(kind, variant, extra).items():
        samples.setdefault(col, {}).setdefault(key, []).append(s)
  up.append(machine.uptime())
  rows = []
  for shape in shapes:
    for op in OPS:
      row = {'conv': shape[0], 'op': op, 'batch': shape[1], 'gflop': _flops(shape) / 1e9}
      for col in ('jax default', 'jax ynn_off'):
        row[f'{col} ms'] = statistics.median(samples[col][f'{shape[0]}|{op}']) * 1e3
      for layout in ('channels_last', 'contiguous'):
        if 'torch' in samples:
          row[f'torch {layout} ms'] = statistics.median(
              samples['torch'][f'{shape[0]}|{op}|{layout}']) * 1e3
      for k in [k for k in row if k.endswith(' ms')]:
        row[k.replace(' ms', ' GFLOP/s')] = row['gflop'] / (row[k] / 1e3)
      rows.append(row)
  cols = [c for c in ('jax default', 'jax ynn_off', 'torch channels_last', 'torch contiguous')
          if f'{c} ms' in rows[0]]
  lines = ['| conv | op | ' + ' | '.join(f'{c} GFLOP/s (ms)' for c in cols)
           + (' | best torch / jax ynn_off |' if 'torch contiguous' in cols else ' |'),
           '|' + '---|' * (len(cols) + 2 + ('torch contiguous' in cols))]
  for r in rows:
    cells = [f"{r[f'{c} GFLOP/s']:.1f} ({r[f'{c} ms']:.2f})" for c in cols]
    if 'torch contiguous' in cols:
      best = min(r['torch channels_last ms'], r['torch contiguous ms'])
      cells.append(f"{r['jax ynn_off ms'] / best:.2f}x")
    lines.append(f"| {r['conv']} | {r['op']} | " + ' | '.join(cells) + ' |')
  table = '\n'.join(lines)
  print(table)
  out = {'command': command, 'hardware': machine.hardware(), 'uptime_before': up[0],
         'uptime_after': up[1], 'reps': a.reps, 'flag': platform.YNN_OFF, 'rows': rows,
         'table': table,
         'note': 'each cell: median over reps of the median seconds per call; the JAX variants '
                 'and PyTorch ran in separate interleaved subprocesses'}
  _write(a.out or os.path.join(RESULTS, 'convs_cpu.json'), out)
  return out


# ----------------------------------------------------------------------------------------------
# The update, built from superconv.models and optax directly.

def make_update(model_name, batch):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from superconv import models  # pylint: disable=g-import-not-at-top
  model = models.create_model(model_name, num_classes=10)
  shape = (28, 28, 1) if model_name == 'lenet' else (32, 32, 3)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, *shape), np.float32))
  y = jnp.asarray(rng.integers(0, 10, (batch,)), jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), x[:2], train=False)
  tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))

  def loss_fn(params, batch_stats, x, y):
    logits, new = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                              mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, new.get('batch_stats', {})

  def update(state, batch):
    params, batch_stats, opt_state = state
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, *batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  state = (variables['params'], variables.get('batch_stats', {}), tx.init(variables['params']))
  return update, state, (x, y)


def _instructions(hlo_text):
  """{name: (opcode, output dims, op_name, convolution window or '')} of the ENTRY computation's
  instructions (the thunks); a fusion gets the window of the convolution it contains."""
  import re  # pylint: disable=g-import-not-at-top
  comps, current, entry = {}, None, None
  for line in hlo_text.splitlines():
    m = re.match(r'^(ENTRY )?%?([\w.\-]+) .*\{\s*$', line)
    if m and not line.startswith(' '):
      current = m.group(2)
      comps[current] = []
      if m.group(1):
        entry = current
      continue
    if current and line.startswith('  '):
      comps[current].append(line)

  def window(line):
    w = re.search(r'window=\{([^}]*)\}', line)
    return w.group(1) if w else 'conv'
  conv_window = {c: next((window(l) for l in lines if ' convolution(' in l), '')
                 for c, lines in comps.items()}
  insts = {}
  for line in comps.get(entry, []):
    m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\][^ ]* ([\w\-]+)\(', line)
    if not m:
      continue
    name, _, dims, opcode = m.groups()
    op_name = re.search(r'op_name="([^"]*)"', line)
    calls = re.search(r'calls=%?([\w.\-]+)', line)
    win = window(line) if opcode == 'convolution' else (
        conv_window.get(calls.group(1), '') if calls and opcode == 'fusion' else '')
    insts[name] = (opcode, tuple(int(d) for d in dims.split(',') if d),
                   op_name.group(1) if op_name else '', win)
  return insts


def classify(inst):
  """The class of one thunk. Convolutions: XLA:CPU computes a weight gradient as a convolution
  whose window is the whole activation (or with rhs_dilate for strided ones); a forward
  convolution is traced under jvp() and not under transpose()."""
  import re  # pylint: disable=g-import-not-at-top
  opcode, _, op_name, win = inst
  if win:
    size = re.search(r'size=(\d+)x(\d+)', win)
    if 'rhs_dilate' in win or (size and int(size.group(1)) > 7):
      return 'conv weight grad'
    if 'jvp(' in op_name and 'transpose(' not in op_name:
      return 'conv forward'
    return 'conv input grad'
  if 'transpose' in opcode or opcode == 'copy':
    return 'transpose/copy'
  if op_name and '/bn' in op_name:
    return 'BatchNorm'
  if op_name and 'jvp(' not in op_name and 'transpose(' not in op_name:
    return 'optimizer'
  return 'other elementwise, pool, fc, loss'


def _class_of(name, inst):
  cls = classify(inst)
  # XLA names a loop fusion after its root ops: the layout transposes around the convolutions.
  if cls == 'other elementwise, pool, fc, loss' and name.startswith('transpose_copy'):
    cls = 'transpose/copy'
  return cls


def breakdown_child(batch, steps, toy):
  import gzip  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  model_name = 'resnet8' if toy else 'resnet20'
  update, state, data = make_update(model_name, batch)
  compiled = jax.jit(update).lower(state, data).compile()
  insts = _instructions(compiled.as_text())
  for _ in range(2):
    jax.block_until_ready(compiled(state, data))
  walls = []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(compiled(state, data))
    walls.append(time.perf_counter() - t)
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d, create_perfetto_trace=True)
    t = time.perf_counter()
    for _ in range(steps):
      jax.block_until_ready(compiled(state, data))
    traced_wall = (time.perf_counter() - t) / steps
    jax.profiler.stop_trace()
    path = glob.glob(os.path.join(d, '**', 'perfetto_trace.json.gz'), recursive=True)[0]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  # A thunk's own event covers only its launch (convolutions run asynchronously on the Eigen
  # pool); its 'end: <name>' event marks completion. Intervals [start, end], then a sweep over
  # the timeline shares each instant among the thunks running then, so classes add up to the
  # busy wall time, and what is left is time with no thunk running.
  starts, ends = {}, {}
  for e in events:
    if e.get('ph') != 'X':
      continue
    name = e.get('name', '')
    if name in insts:
      starts.setdefault(name, []).append(e['ts'])
    elif name.startswith('end: ') and name[5:] in insts:
      ends.setdefault(name[5:], []).append(e['ts'] + e.get('dur', 0.0))
  intervals = []
  for name, ss in starts.items():
    for t0, t1 in zip(sorted(ss), sorted(ends.get(name, []))):
      intervals.append((t0, max(t1, t0), name))
  points = sorted({t for t0, t1, _ in intervals for t in (t0, t1)})
  per_class, per_inst = {}, {}
  if intervals:
    import bisect  # pylint: disable=g-import-not-at-top
    active = [[] for _ in points]
    for t0, t1, name in intervals:
      for i in range(bisect.bisect_left(points, t0), bisect.bisect_left(points, t1)):
        active[i].append(name)
    for i in range(len(points) - 1):
      seg = (points[i + 1] - points[i]) / 1e3 / steps  # ms per update
      for name in active[i]:
        part = seg / len(active[i])
        cls = _class_of(name, insts[name])
        per_class[cls] = per_class.get(cls, 0.0) + part
        per_inst[name] = per_inst.get(name, 0.0) + part
  span_ms = sum((points[i + 1] - points[i]) for i in range(len(points) - 1)
                if active[i]) / 1e3 / steps if intervals else 0.0
  per_class['no thunk running'] = max(0.0, traced_wall * 1e3 - span_ms)
  thunk_ms = sum(per_class.values())
  top = sorted(per_inst.items(), key=lambda kv: -kv[1])[:15]
  counts = {}
  for name, inst in insts.items():
    if inst[0] not in ('parameter', 'tuple', 'get-tuple-element', 'bitcast', 'constant'):
      counts[_class_of(name, inst)] = counts.get(_class_of(name, inst), 0) + 1
  return {'model': model_name, 'batch': batch, 'steps_profiled': steps, 'class_counts': counts,
          'step_ms_median': statistics.median(walls) * 1e3, 'step_ms_traced': traced_wall * 1e3,
          'thunk_ms_sum': thunk_ms, 'classes_ms': per_class,
          'top_instructions_ms': [{'name': n, 'ms': ms, 'class': _class_of(n, insts[n]),
                                   'op_name': insts[n][2][-120:]} for n, ms in top],
          'instructions': len(insts)}


CLASS_ORDER = ('conv forward', 'conv input grad', 'conv weight grad', 'transpose/copy',
               'BatchNorm', 'other elementwise, pool, fc, loss', 'optimizer', 'no thunk running')


def breakdown(a, command):
  batch = 8 if a.toy else a.batch
  extra = ['--batch', str(batch), '--steps', str(1 if a.toy else a.steps)] + (
      ['--toy'] if a.toy else [])
  up = [machine.uptime()]
  res, walls = {}, {v: [] for v in VARIANTS}
  variants = ['ynn_off'] if a.toy else list(VARIANTS)
  for _ in range(1 if a.toy else a.breakdown_reps):  # interleaved: the wall times are compared
    for v in variants:
      res[v] = _run_child('breakdown', v, extra)
      walls[v].append(res[v]['step_ms_median'])
  for v in variants:
    res[v]['step_ms_median_per_rep'] = walls[v]
    res[v]['step_ms_median'] = statistics.median(walls[v])
  up.append(machine.uptime())
  lines = ['| class | ' + ' | '.join(f'{v} ms/update (%)' for v in res) + ' |',
           '|---|' + '---|' * len(res)]
  for cls in CLASS_ORDER:
    cells = []
    for v, r in res.items():
      ms = r['classes_ms'].get(cls, 0.0)
      cells.append(f"{ms:.1f} ({100 * ms / max(r['thunk_ms_sum'], 1e-9):.0f} %)")
    lines.append(f'| {cls} | ' + ' | '.join(cells) + ' |')
  lines.append('| sum (traced wall time per update) | ' + ' | '.join(
      f"{r['thunk_ms_sum']:.1f} ({r['step_ms_traced']:.1f})" for r in res.values()) + ' |')
  lines.append('| wall time per update, untraced (median) | ' + ' | '.join(
      f"{r['step_ms_median']:.1f}" for r in res.values()) + ' |')
  table = '\n'.join(lines)
  print(table)
  out = {'command': command, 'hardware': machine.hardware(), 'uptime_before': up[0],
         'uptime_after': up[1], 'flag': platform.YNN_OFF, 'variants': res,
         'table': table,
         'note': 'jax.profiler trace: each XLA:CPU thunk from its start event to its "end:" '
                 'event, classed from the optimised HLO; overlapping thunks share the time, so '
                 'the classes add up to the traced wall time'}
  _write(a.out or os.path.join(RESULTS, 'breakdown_cpu.json'), out)
  return out


# ----------------------------------------------------------------------------------------------
# Several updates per call: lax.scan with and without unrolling.

SCAN_MODES = (('1 update per call', None), ('scan', 1), ('scan unroll=2', 2),
              ('scan unroll=True', True))


def scan_child(model_name, batch, k, reps, slow_s):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  update, state, (x, y) = make_update(model_name, batch)
  xs = (jnp.stack([x] * k), jnp.stack([y] * k))
  fns, compile_s = {}, {}
  for mode, unroll in SCAN_MODES:
    t = time.perf_counter()
    if unroll is None:
      c = jax.jit(update).lower(state, (x, y)).compile()
      def one_per_call(s, c=c):
        for _ in range(k):
          s = c(s, (x, y))[0]
        return s
      fns[mode] = one_per_call
    else:
      c = jax.jit(lambda s, xs, u=unroll: jax.lax.scan(update, s, xs, unroll=u)).lower(
          state, xs).compile()
      fns[mode] = lambda s, c=c: c(s, xs)[0]
    compile_s[mode] = time.perf_counter() - t
  times = {m: [] for m in fns}
  slow = set()
  for _ in range(reps + 1):  # the first round warms up, except for slow modes
    for mode, f in fns.items():
      if mode in slow:
        continue
      t = time.perf_counter()
      jax.block_until_ready(f(state))
      dt = (time.perf_counter() - t) / k
      times[mode].append(dt)
      if dt > slow_s:  # a slow mode is timed once: its first call is the measurement
        slow.add(mode)
  out = {}
  for mode in fns:
    ts = times[mode] if mode in slow or len(times[mode]) == 1 else times[mode][1:]
    out[mode] = {'ms_per_update': statistics.median(ts) * 1e3, 'timed_calls': len(ts),
                 'compile_s': compile_s[mode]}
  return out


def scan_unroll(a, command):
  if a.toy:
    cases = [('lenet', 4, 2)]
  else:
    cases = [('resnet20', a.scan_resnet_batch, 4), ('lenet', 512, 4)]
  up = [machine.uptime()]
  res = []
  for model_name, batch, k in cases:
    extra = ['--model', model_name, '--batch', str(batch), '--k', str(k), '--scan-reps',
             str(1 if a.toy else a.scan_reps), '--slow-s', str(a.slow_s)]
    r = _run_child('scan', 'ynn_off', extra)
    res.append({'model': model_name, 'batch': batch, 'updates_per_call': k, 'modes': r})
  up.append(machine.uptime())
  lines = ['| model, batch | mode (k=4 updates per call) | ms per update | vs 1 per call '
           '| compile s |', '|---|---|---|---|---|']
  for r in res:
    base = r['modes']['1 update per call']['ms_per_update']
    for mode, m in r['modes'].items():
      lines.append(f"| {r['model']}, {r['batch']} | {mode} | {m['ms_per_update']:.1f} | "
                   f"{m['ms_per_update'] / base:.2f}x | {m['compile_s']:.1f} |")
  table = '\n'.join(lines)
  print(table)
  out = {'command': command, 'hardware': machine.hardware(), 'uptime_before': up[0],
         'uptime_after': up[1], 'xla_flags': platform.YNN_OFF, 'cases': res,
         'table': table,
         'note': 'all modes compiled in one process and timed interleaved; a mode slower than '
                 f'{a.slow_s} s per update is timed on one call (its first)'}
  _write(a.out or os.path.join(RESULTS, 'scan_unroll_cpu.json'), out)
  return out


def main(argv=None, command=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--breakdown', action='store_true', help='per-op profile of a ResNet-20 update')
  p.add_argument('--scan', action='store_true', help='lax.scan / unroll against 1 update per call')
  p.add_argument('--toy', action='store_true', help='tiny shapes, 1 repetition (tests)')
  p.add_argument('--reps', type=int, default=3, help='interleaved repetitions of the conv table')
  p.add_argument('--min-s', type=float, default=0.3, help='seconds of timed calls per cell')
  p.add_argument('--no-torch', action='store_true')
  p.add_argument('--batch', type=int, default=128, help='breakdown batch')
  p.add_argument('--steps', type=int, default=5, help='breakdown: profiled updates')
  p.add_argument('--breakdown-reps', type=int, default=3,
                 help='breakdown: interleaved runs of each variant (the last one is profiled)')
  p.add_argument('--scan-resnet-batch', type=int, default=64)
  p.add_argument('--scan-reps', type=int, default=3)
  p.add_argument('--slow-s', type=float, default=2.0)
  p.add_argument('--out', default='', help='JSON path (default results/<kind>_cpu.json here)')
  # Internal: one measurement in this process.
  p.add_argument('--child', choices=['jax', 'torch', 'breakdown', 'scan'], help=argparse.SUPPRESS)
  p.add_argument('--variant', default='default', choices=list(VARIANTS), help=argparse.SUPPRESS)
  p.add_argument('--model', default='resnet20', help=argparse.SUPPRESS)
  p.add_argument('--k', type=int, default=4, help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.toy:
    a.reps, a.min_s, a.scan_reps, a.steps = 1, 0.0, 1, 1
  if a.child:
    shapes = TOY_SHAPES if a.toy else SHAPES
    if a.child == 'jax':
      r = child_jax(shapes, a.min_s)
    elif a.child == 'torch':
      r = child_torch(shapes, a.min_s)
    elif a.child == 'breakdown':
      r = breakdown_child(a.batch, a.steps, a.toy)
    else:
      r = scan_child(a.model, a.batch, a.k, a.scan_reps if not a.toy else 1, a.slow_s)
    print(json.dumps(r))
    return r
  command = command or 'python -m research.cpu_perf.convs ' + ' '.join(
      argv if argv is not None else sys.argv[1:])
  if a.breakdown:
    return breakdown(a, command)
  if a.scan:
    return scan_unroll(a, command)
  return conv_table(a, command)


if __name__ == '__main__':
  main()
