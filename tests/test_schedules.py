"""superconv.schedules: hand-computed values, phase boundaries, properties, jit, torch parity."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from superconv import schedules as S

DATA = pathlib.Path(__file__).parent / 'data'


def values(fn, steps):
  return np.asarray(jax.vmap(fn)(jnp.asarray(steps, jnp.int32)))


def assert_f32(actual, expected):
  """Equal to float32 precision: within 2 ulp of the float32 rounding of the exact value."""
  np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                             rtol=2.5e-7, atol=0)


# ---------------------------------------------------------------------------------------------
# (a) A tiny horizon with every value written out, including before the start and after the end.


def test_one_cycle_every_step_three_phase():
  # T = 20, p = 0.25: phase ends 4, 8, 19; initial 0.1, peak 1.0, min 1e-4.
  lr = S.one_cycle(20, 1.0, pct_start=0.25, div_factor=10.0, final_div_factor=1000.0)
  up = [0.1, 0.325, 0.55, 0.775, 1.0]
  down = [0.775, 0.55, 0.325, 0.1]
  tail = [0.1 + (1e-4 - 0.1) * k / 11 for k in range(1, 12)]  # 8 -> 19 in 11 updates
  expected = [0.1] + up + down + tail + [1e-4, 1e-4]
  assert_f32(values(lr, range(-1, 22)), expected)

  m = S.one_cycle_momentum(20, base_momentum=0.85, max_momentum=0.95, pct_start=0.25)
  expected_m = ([0.95] + [0.95, 0.925, 0.9, 0.875, 0.85] + [0.875, 0.9, 0.925, 0.95]
                + [0.95] * 11 + [0.95, 0.95])
  assert_f32(values(m, range(-1, 22)), expected_m)


def test_one_cycle_every_step_two_phase_linear_and_cos():
  # T = 10, p = 0.3: ends 2 and 9. initial 0.04, peak 1, min 4e-6.
  lr = S.one_cycle(10, 1.0, pct_start=0.3, div_factor=25.0, final_div_factor=1e4,
                   three_phase=False)
  expected = [0.04, 0.52, 1.0] + [1.0 + (4e-6 - 1.0) * k / 7 for k in range(1, 8)] + [4e-6]
  assert_f32(values(lr, range(11)), expected)

  cos = S.one_cycle(10, 1.0, pct_start=0.5, three_phase=False, anneal='cos')
  # ends 4 and 9: up 0.1 -> 1 over 4, down 1 -> 1e-4 over 5; cos midpoint = mean of the ends.
  up = [1.0 + (0.1 - 1.0) / 2 * (1 + np.cos(np.pi * k / 4)) for k in range(5)]
  down = [1e-4 + (1.0 - 1e-4) / 2 * (1 + np.cos(np.pi * k / 5)) for k in range(1, 6)]
  assert_f32(values(cos, range(10)), up + down)
  assert_f32(values(cos, [2]), [0.55])


def test_triangular_every_step_all_modes():
  ss = 2
  assert_f32(values(S.triangular(0.0, 1.0, ss), range(-1, 10)),
             [0, 0, .5, 1, .5, 0, .5, 1, .5, 0, .5])
  assert_f32(values(S.triangular(0.0, 1.0, ss, mode='triangular2'), range(13)),
             [0, .5, 1, .5, 0, .25, .5, .25, 0, .125, .25, .125, 0])
  g = 0.9
  tri = [0, .5, 1, .5, 0, .5, 1]
  assert_f32(values(S.triangular(1.0, 2.0, ss, mode='exp_range', gamma=g), range(7)),
             [1.0 + t * g**k for k, t in enumerate(tri)])


def test_caffe_one_cycle_every_step():
  # base 0.1, max 1.0, ss 4, floor 1e-4: up 0.1 -> 1.0; then 1.0 * (8 - it) / 4 -> 0; floor.
  lr = S.caffe_one_cycle(0.1, 1.0, 4)
  expected = [0.1, 0.1, 0.325, 0.55, 0.775, 1.0, 0.75, 0.5, 0.25, 1e-4, 1e-4, 1e-4]
  assert_f32(values(lr, range(-1, 11)), expected)


def test_cyclical_momentum_every_step_keeps_cycling():
  m = S.cyclical_momentum(0.95, 0.85, 2)
  assert_f32(values(m, range(-1, 10)),
             [.95, .95, .9, .85, .9, .95, .9, .85, .9, .95, .9])
  # min > max: the increasing-momentum rows of arXiv:1803.09820 Table 1 (0.90 -> 1.00).
  assert_f32(values(S.cyclical_momentum(0.9, 1.0, 2), [0, 1, 2]), [0.9, 0.95, 1.0])


# ---------------------------------------------------------------------------------------------
# (b) Notable steps of the paper's schedules, and the Caffe parity values.


def test_triangular_caffe_values_exact():
  # Smith & Topin Fig. 1a: CLR 0.1-3.0, stepsize 5k; the Caffe logs show lr 0.158 at 100 and
  # at 9,900. The integer remainder makes these the correctly rounded float32 values.
  lr = S.triangular(0.1, 3.0, 5000)
  for step, expected in ((0, 0.1), (100, 0.158), (5000, 3.0), (9900, 0.158)):
    assert lr(step) == np.float32(expected), (step, float(lr(step)))


@pytest.mark.parametrize('step,expected', [
    (-1, 0.1), (2500, 1.55), (4999, 3.0 - 2.9 / 5000), (5001, 3.0 - 2.9 / 5000),
    (9999, 0.1 + 2.9 / 5000), (10_000, 0.1), (15_000, 3.0)])
def test_triangular_notable_steps(step, expected):
  assert_f32(S.triangular(0.1, 3.0, 5000)(step), expected)


@pytest.mark.parametrize('step,expected', [
    (0, 0.35), (49_999, 0.35), (50_000, 0.035), (69_999, 0.035), (70_000, 0.0035),
    (10**6, 0.0035)])
def test_multistep_caffe_values(step, expected):
  # The PC-LR baseline: 0.35, x0.1 at 50k and 70k (Caffe: it >= stepvalue).
  got = S.multistep(0.35, (50_000, 70_000), 0.1)(step)
  assert got == np.float32(expected), (float(got), expected)


@pytest.mark.parametrize('base,peak,ss,step,expected', [
    # ResNet-56 1cycle of arXiv:1803.09820 (0.08-0.8, SS 4,003 updates, 9,277 in all).
    (0.08, 0.8, 4003, 0, 0.08),
    (0.08, 0.8, 4003, 4003, 0.8),
    (0.08, 0.8, 4003, 4004, 0.8 * 4002 / 4003),
    (0.08, 0.8, 4003, 7603, 0.8 * 403 / 4003),   # crosses base at (2 - 0.1) SS = 7,605.7
    (0.08, 0.8, 4003, 8005, 0.8 / 4003),          # 2.0e-4: still above the 8e-5 floor
    (0.08, 0.8, 4003, 8006, 8e-5),                # floor base / 1000
    (0.08, 0.8, 4003, 9276, 8e-5),                # last update
    (0.1, 1.0, 10, 15, 0.5),
    (0.05, 1.0, 100, 1000, 5e-5),                 # ImageNet floor 0.00005
])
def test_caffe_one_cycle_notable_steps(base, peak, ss, step, expected):
  assert_f32(S.caffe_one_cycle(base, peak, ss)(step), expected)


@pytest.mark.parametrize('step,expected', [
    (-5, 0.3), (0, 0.3), (4499, 3.0), (6000, 0.3 + (3.0 - 0.3) * (8998 - 6000) / 4499),
    (8998, 0.3), (9999, 3e-4), (12_000, 3e-4)])
def test_one_cycle_defaults_notable_steps(step, expected):
  # T = 10k, max 3, defaults p = 0.45, div 10, final 1000: ends 4,499, 8,998, 9,999.
  assert_f32(S.one_cycle(10_000, 3.0)(step), expected)


def test_lr_range_values():
  lin = S.lr_range(0.0, 3.0, 5000)
  assert_f32(values(lin, [-1, 0, 1, 2500, 5000, 5001]), [0, 0, 3.0 / 5000, 1.5, 3.0, 3.0])
  ex = S.lr_range(1e-5, 10.0, 6, mode='exp')
  np.testing.assert_allclose(values(ex, range(-1, 8)),  # float32 pow: a few ulp
                             [1e-5, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 10.0], rtol=1e-6)


def test_caffe_classic_policies():
  assert_f32(values(S.step_decay(0.1, 3, 0.1), [0, 2, 3, 5, 6, 9]),
             [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-4])
  assert_f32(values(S.inv(0.01, 1e-4, 0.75), [0, 10_000, 30_000]),
             [0.01, 0.01 * 2**-0.75, 0.01 * 4**-0.75])
  c = S.constant(0.9)
  assert_f32(values(c, [0, 7, 10**6]), [0.9] * 3)


# ---------------------------------------------------------------------------------------------
# (c) Properties.


def _strictly(diff, sign):
  return bool(np.all(sign * diff > 0))


@pytest.mark.parametrize('anneal', ['linear', 'cos'])
@pytest.mark.parametrize('three_phase', [True, False])
def test_one_cycle_phases_monotone_and_momentum_mirrors(anneal, three_phase):
  total, pct = 1000, 0.37
  lr = values(S.one_cycle(total, 1.0, pct_start=pct, three_phase=three_phase, anneal=anneal),
              range(total))
  m = values(S.one_cycle_momentum(total, pct_start=pct, three_phase=three_phase,
                                  anneal=anneal), range(total))
  e1 = int(pct * total - 1)  # 369
  assert _strictly(np.diff(lr[:e1 + 1]), +1) and _strictly(np.diff(m[:e1 + 1]), -1)
  if three_phase:
    e2 = int(2 * pct * total - 2)  # 738
    assert _strictly(np.diff(lr[e1:e2 + 1]), -1) and _strictly(np.diff(m[e1:e2 + 1]), +1)
    assert _strictly(np.diff(lr[e2:]), -1)
    np.testing.assert_array_equal(m[e2:], np.float32(0.95))
  else:
    assert _strictly(np.diff(lr[e1:]), -1) and _strictly(np.diff(m[e1:]), +1)
  assert np.argmax(lr) == np.argmin(m) == e1
  assert_f32([lr[e1], m[e1], lr[-1]], [1.0, 0.85, 1e-4])


def test_caffe_one_cycle_and_cyclical_momentum_mirror():
  ss = 50
  lr = values(S.caffe_one_cycle(0.1, 1.0, ss), range(3 * ss))
  m = values(S.cyclical_momentum(0.95, 0.85, ss), range(3 * ss))
  assert np.argmax(lr) == np.argmin(m) == ss
  assert _strictly(np.diff(lr[:ss + 1]), +1)
  assert _strictly(np.diff(lr[ss:2 * ss - 1]), -1)  # reaches the floor at 2 SS
  assert np.all(lr[2 * ss:] == np.float32(1e-4))
  assert lr[2 * ss - 1] < 0.1  # it goes below base before the floor: toward 0, not base.


ALL = {
    'triangular': S.triangular(0.1, 3.0, 50),
    'triangular2': S.triangular(0.1, 3.0, 50, mode='triangular2'),
    'exp_range': S.triangular(0.1, 3.0, 50, mode='exp_range', gamma=0.999),
    'lr_range': S.lr_range(0.0, 3.0, 200),
    'lr_range_exp': S.lr_range(1e-4, 3.0, 200, mode='exp'),
    'one_cycle': S.one_cycle(237, 3.0),
    'one_cycle_cos': S.one_cycle(237, 3.0, anneal='cos', three_phase=False),
    'one_cycle_momentum': S.one_cycle_momentum(237),
    'caffe_one_cycle': S.caffe_one_cycle(0.1, 3.0, 90),
    'cyclical_momentum': S.cyclical_momentum(0.95, 0.85, 60),
    'multistep': S.multistep(0.35, (100, 150), 0.1),
    'step_decay': S.step_decay(0.1, 40, 0.5),
    'inv': S.inv(0.01, 1e-2, 0.75),
    'constant': S.constant(0.9),
    'linear_decay': S.linear_decay(237, 0.4, 20),
    'wsd': S.warmup_stable_decay(237, 0.4, 20, decay_fraction=0.3),
    'wsd_linear': S.warmup_stable_decay(237, 0.4, decay_fraction=0.3, cooldown='linear'),
    'warmup_constant': S.warmup_constant(237, 0.4, 20),
}


@pytest.mark.parametrize('name', sorted(ALL))
def test_jitted_equals_eager_float32_and_strong_typed(name):
  fn = ALL[name]
  steps = [-3, 0, 1, 49, 50, 99, 100, 101, 150, 236, 237, 300]
  jitted = jax.jit(fn)
  for s in steps:
    eager = fn(s)
    traced = jitted(jnp.int32(s))
    assert traced.dtype == jnp.float32 and not traced.weak_type, name
    assert eager.dtype == jnp.float32 and eager.shape == ()
    # XLA may fuse a multiply-add differently from op-by-op execution: equal to a few ulp.
    np.testing.assert_allclose(traced, eager, rtol=5e-7, atol=0, err_msg=f'{name} {s}')
  np.testing.assert_allclose(values(fn, steps), [np.asarray(fn(s)) for s in steps],
                             rtol=5e-7, atol=0)


def test_schedule_traces_once():
  traces = []

  def f(step):
    traces.append(1)
    return S.one_cycle(100, 1.0)(step) * S.cyclical_momentum(0.95, 0.85, 10)(step)

  g = jax.jit(f)
  for s in range(5):
    g(jnp.int32(s))
  assert len(traces) == 1


# ---------------------------------------------------------------------------------------------
# Parity with torch.optim.lr_scheduler.OneCycleLR (values committed by make_onecycle_torch.py).


def _torch_cases():
  return json.loads((DATA / 'onecycle_torch.json').read_text())['cases']


def _case_id(case):
  a = case['args']
  return f"T{a['total_steps']}-{a['anneal']}-{'3' if a['three_phase'] else '2'}phase"


@pytest.mark.parametrize('case', _torch_cases(), ids=_case_id)
def test_one_cycle_matches_torch(case):
  a = dict(case['args'])
  total = a.pop('total_steps')
  base_m, max_m = a.pop('base_momentum'), a.pop('max_momentum')
  lr = S.one_cycle(total, **a)
  m = S.one_cycle_momentum(total, base_momentum=base_m, max_momentum=max_m,
                           pct_start=a['pct_start'], three_phase=a['three_phase'],
                           anneal=a['anneal'])
  steps = np.arange(total)
  assert len(case['lr']) == total
  np.testing.assert_allclose(values(lr, steps), case['lr'], rtol=1e-6, atol=0)
  np.testing.assert_allclose(values(m, steps), case['momentum'], rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------
# Argument validation.


@pytest.mark.parametrize('factory,kwargs,arg', [
    (S.triangular, dict(base_lr=-0.1, max_lr=1.0, step_size=10), 'base_lr'),
    (S.triangular, dict(base_lr=0.5, max_lr=0.1, step_size=10), 'max_lr'),
    (S.triangular, dict(base_lr=0.1, max_lr=1.0, step_size=0), 'step_size'),
    (S.triangular, dict(base_lr=0.1, max_lr=1.0, step_size=2.5), 'step_size'),
    (S.triangular, dict(base_lr=0.1, max_lr=1.0, step_size=10, mode='tri'), 'mode'),
    (S.triangular, dict(base_lr=0.1, max_lr=1.0, step_size=10, gamma=1.5), 'gamma'),
    (S.lr_range, dict(min_lr=0.0, max_lr=1.0, num_steps=10, mode='exp'), 'min_lr'),
    (S.lr_range, dict(min_lr=1.0, max_lr=1.0, num_steps=10), 'max_lr'),
    (S.lr_range, dict(min_lr=0.0, max_lr=1.0, num_steps=0), 'num_steps'),
    (S.one_cycle, dict(total_steps=1, max_lr=1.0), 'total_steps'),
    (S.one_cycle, dict(total_steps=100, max_lr=0.0), 'max_lr'),
    (S.one_cycle, dict(total_steps=100, max_lr=1.0, pct_start=1.0), 'pct_start'),
    (S.one_cycle, dict(total_steps=100, max_lr=1.0, pct_start=0.6), 'pct_start'),  # e2 > e3
    (S.one_cycle, dict(total_steps=10, max_lr=1.0, pct_start=0.1), 'pct_start'),   # e1 = 0
    (S.one_cycle, dict(total_steps=100, max_lr=1.0, div_factor=0.0), 'div_factor'),
    (S.one_cycle, dict(total_steps=100, max_lr=1.0, final_div_factor=-1.0), 'final_div_factor'),
    (S.one_cycle, dict(total_steps=100, max_lr=1.0, anneal='exp'), 'anneal'),
    (S.one_cycle_momentum, dict(total_steps=100, base_momentum=1.2), 'base_momentum'),
    (S.one_cycle_momentum, dict(total_steps=100, max_momentum=-0.1), 'max_momentum'),
    (S.caffe_one_cycle, dict(base_lr=0.0, max_lr=1.0, step_size=10), 'base_lr'),
    (S.caffe_one_cycle, dict(base_lr=0.1, max_lr=0.05, step_size=10), 'max_lr'),
    (S.caffe_one_cycle, dict(base_lr=0.1, max_lr=1.0, step_size=-1), 'step_size'),
    (S.caffe_one_cycle, dict(base_lr=0.1, max_lr=1.0, step_size=10, floor_div=0), 'floor_div'),
    (S.cyclical_momentum, dict(max_momentum=0.95, min_momentum=0.85, step_size=0), 'step_size'),
    (S.cyclical_momentum, dict(max_momentum=1.5, min_momentum=0.85, step_size=5),
     'max_momentum'),
    (S.multistep, dict(base_lr=0.1, boundaries=(70, 50), gamma=0.1), 'boundaries'),
    (S.multistep, dict(base_lr=0.1, boundaries=(0, 50), gamma=0.1), 'boundaries'),
    (S.multistep, dict(base_lr=0.1, boundaries=(50,), gamma=0.0), 'gamma'),
    (S.step_decay, dict(base_lr=0.1, step_size=0, gamma=0.1), 'step_size'),
    (S.inv, dict(base_lr=0.01, gamma=-1e-4, power=0.75), 'gamma'),
    (S.inv, dict(base_lr=0.01, gamma=1e-4, power=-1.0), 'power'),
    (S.constant, dict(value=float('nan')), 'value'),
])
def test_invalid_arguments_name_the_argument(factory, kwargs, arg):
  with pytest.raises(ValueError, match=rf'\b{arg}\b'):
    factory(**kwargs)


# ---------------------------------------------------------------------------------------------
# The 2020s schedules of the equal-budget study: every value written out from the formula.


def test_linear_decay_every_step_without_and_with_warmup():
  T = 8
  assert_f32(values(S.linear_decay(T, 0.4), range(-1, T + 3)),
             [0.4] + [0.4 * (T - k) / T for k in range(T + 1)] + [0.0, 0.0])
  W = 3  # 0, peak/3, 2 peak/3, then peak (T - k) / (T - W) from k = W
  expected = [0.4 * k / W for k in range(W)] + [0.4 * (T - k) / (T - W) for k in range(W, T + 1)]
  assert_f32(values(S.linear_decay(T, 0.4, W), range(T + 1)), expected)
  end = values(S.linear_decay(T, 0.4, end_lr=0.1), [0, 4, T, T + 5])
  assert_f32(end, [0.4, 0.25, 0.1, 0.1])


@pytest.mark.parametrize('cooldown,shape', [('linear', lambda t: 1 - t),
                                            ('1-sqrt', lambda t: 1 - np.sqrt(t))])
def test_warmup_stable_decay_every_step(cooldown, shape):
  T, W, peak = 20, 4, 0.3
  fn = S.warmup_stable_decay(T, peak, W, decay_fraction=0.25, cooldown=cooldown)
  D = 5  # round(0.25 * 20)
  S0 = T - D
  expected = ([peak * k / W for k in range(W)] + [peak] * (S0 - W)
              + [peak * shape((k - S0) / D) for k in range(S0, T + 1)] + [0.0])
  np.testing.assert_allclose(values(fn, range(T + 2)), expected, rtol=3e-7, atol=1e-8)
  assert float(fn(S0 - 1)) == np.float32(peak) and float(fn(T)) == 0.0


def test_wsd_cooldown_length_rounds_and_1_sqrt_sits_below_linear():
  lin = values(S.warmup_stable_decay(1000, 1.0, decay_fraction=0.1, cooldown='linear'),
               range(1001))
  sq = values(S.warmup_stable_decay(1000, 1.0, decay_fraction=0.1), range(1001))
  assert (lin[:900] == 1.0).all() and lin[901] < 1.0 and (sq[:900] == 1.0).all()
  assert (sq[901:1000] < lin[901:1000]).all()  # (1 - sqrt) drops faster at first, as Hägele
  assert_f32(sq[[925, 975]], [1 - np.sqrt(0.25), 1 - np.sqrt(0.75)])


def test_warmup_constant_is_wsd_without_cooldown():
  assert_f32(values(S.warmup_constant(10, 0.5, 4), range(12)),
             [0.0, 0.125, 0.25, 0.375] + [0.5] * 8)
  assert_f32(values(S.warmup_constant(10, 0.5), [0, 9, 50]), [0.5] * 3)


@pytest.mark.parametrize('factory,kwargs,arg', [
    (S.linear_decay, dict(total_steps=10, peak_lr=0.0), 'peak_lr'),
    (S.linear_decay, dict(total_steps=10, peak_lr=1.0, warmup_steps=10), 'warmup_steps'),
    (S.linear_decay, dict(total_steps=10, peak_lr=1.0, end_lr=2.0), 'end_lr'),
    (S.warmup_stable_decay, dict(total_steps=10, peak_lr=1.0, decay_fraction=1.5),
     'decay_fraction'),
    (S.warmup_stable_decay, dict(total_steps=10, peak_lr=1.0, cooldown='cos'), 'cooldown'),
    (S.warmup_stable_decay, dict(total_steps=10, peak_lr=1.0, warmup_steps=9,
                                 decay_fraction=0.5), 'warmup_steps'),
    (S.one_cycle_momentum, dict(total_steps=100, base_momentum=0.95, max_momentum=0.85),
     'base_momentum'),
])
def test_new_schedules_and_swapped_momentum_name_the_argument(factory, kwargs, arg):
  with pytest.raises(ValueError, match=rf'\b{arg}\b'):
    factory(**kwargs)


@pytest.mark.parametrize('fn,kwargs,points_to', [
    (S.one_cycle, dict(anneal_strategy='cos'), 'anneal='),
    (S.one_cycle, dict(cycle_momentum=True), 'one_cycle_momentum'),
    (S.one_cycle, dict(epochs=3), 'total_steps'),
    (S.one_cycle_momentum, dict(anneal_strategy='linear'), 'anneal='),
])
def test_a_torch_keyword_is_a_type_error_naming_the_superconv_spelling(fn, kwargs, points_to):
  args = (100, 1.0) if fn is S.one_cycle else (100,)
  with pytest.raises(TypeError, match=points_to):
    fn(*args, **kwargs)
  with pytest.raises(TypeError, match='unexpected'):
    fn(*args, pct=0.3)


def test_torch_defaults_give_torchs_default_curve():
  case = next(c for c in _torch_cases()
              if {k: c['args'][k] for k in S.TORCH_ONE_CYCLE} == S.TORCH_ONE_CYCLE)
  total, steps = case['args']['total_steps'], np.arange(case['args']['total_steps'])
  lr = S.one_cycle(total, case['args']['max_lr'], **S.TORCH_ONE_CYCLE)
  m = S.one_cycle_momentum(total, **S.TORCH_ONE_CYCLE_MOMENTUM)
  np.testing.assert_allclose(values(lr, steps), case['lr'], rtol=1e-6, atol=0)
  np.testing.assert_allclose(values(m, steps), case['momentum'], rtol=1e-6, atol=0)
  # ... and superconv's own defaults are another curve (why a port must pass them).
  assert not np.allclose(values(S.one_cycle(total, case['args']['max_lr']), steps), case['lr'])
