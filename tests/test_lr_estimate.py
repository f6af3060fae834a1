"""The Hessian-free LR estimate against closed forms on a diagonal quadratic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from superconv import lr_estimate

# f(theta) = 1/2 sum_k a_k theta_k^2, split over two leaves so the pytree sums are exercised.
CURVATURE = {'conv': np.array([0.5, 2.0, 8.0], np.float32), 'dense': np.array([[1.0, 4.0]],
                                                                               np.float32)}
THETA0 = {'conv': np.array([1.0, -3.0, 0.25], np.float32), 'dense': np.array([[-2.0, 0.5]],
                                                                              np.float32)}


def _gd(theta, lr):
  """theta - lr * grad f(theta) with grad f = a * theta."""
  return jax.tree.map(lambda t, a: t - lr * a * t, theta, CURVATURE)


def _snapshots(lr, lr_next=None):
  t0 = THETA0
  t1 = _gd(t0, lr)
  t2 = _gd(t1, lr if lr_next is None else lr_next)
  return t0, t1, t2


def _global_closed_form():
  # num = eps sum a|t|, den = eps^2 sum a^2 |t|  ->  eps* = sum a|t| / sum a^2|t|, any eps.
  a = np.concatenate([CURVATURE['conv'], CURVATURE['dense'].ravel()]).astype(np.float64)
  t = np.abs(np.concatenate([THETA0['conv'], THETA0['dense'].ravel()])).astype(np.float64)
  return float(np.sum(a * t) / np.sum(a * a * t))


@pytest.mark.parametrize('lr', [0.1, 0.2, 0.3])
def test_per_weight_estimate_is_inverse_curvature(lr):
  per_weight = lr_estimate.estimate_lr_per_weight(*_snapshots(lr), lr)
  for name in CURVATURE:
    np.testing.assert_allclose(per_weight[name], 1.0 / CURVATURE[name], rtol=2e-4)


@pytest.mark.parametrize('lr', [1e-3, 0.01, 0.3])
def test_small_steps_in_float64(lr):
  # The second difference is ~ eps^2 a theta: in float32 a 1e-3 step loses most digits, so the
  # estimate keeps float64 snapshots in float64.
  with jax.enable_x64(True):
    f64 = lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float64), tree)
    theta0, curvature = f64(THETA0), f64(CURVATURE)
    t1 = jax.tree.map(lambda t, a: t - lr * a * t, theta0, curvature)
    t2 = jax.tree.map(lambda t, a: t - lr * a * t, t1, curvature)
    per_weight = lr_estimate.estimate_lr_per_weight(theta0, t1, t2, lr)
    assert per_weight['conv'].dtype == jnp.float64
    for name in CURVATURE:
      np.testing.assert_allclose(per_weight[name], 1.0 / CURVATURE[name], rtol=1e-8)
    est = lr_estimate.estimate_lr(theta0, t1, t2, lr)
    assert float(est) == pytest.approx(12.5 / 38.25, rel=1e-8)


@pytest.mark.parametrize('lr', [0.05, 0.1, 0.2, 0.3])
def test_global_estimate_is_curvature_weighted(lr):
  est = float(lr_estimate.estimate_lr(*_snapshots(lr), lr))
  # By hand for these numbers: sum a|t| = 0.5 + 6 + 2 + 2 + 2 = 12.5,
  # sum a^2|t| = 0.25 + 12 + 16 + 2 + 8 = 38.25.
  assert _global_closed_form() == pytest.approx(12.5 / 38.25)
  assert est == pytest.approx(12.5 / 38.25, rel=2e-4)
  # A weighted average of the per-weight optima 1/a_k with weights a_k^2 |t_k|: between them.
  assert 1 / 8.0 < est < 1 / 0.5


def test_wrong_lr_scales_the_estimate():
  # The formula is linear in the eps it is told: a wrong eps gives a proportionally wrong answer.
  t = _snapshots(0.1)
  assert float(lr_estimate.estimate_lr(*t, 0.2)) == pytest.approx(2 * 12.5 / 38.25, rel=2e-4)


def test_two_different_lrs_with_lr_next():
  t = _snapshots(0.1, lr_next=0.25)
  exact = float(lr_estimate.estimate_lr(*t, 0.1, lr_next=0.25))
  assert exact == pytest.approx(12.5 / 38.25, rel=2e-4)
  per_weight = lr_estimate.estimate_lr_per_weight(*t, 0.1, lr_next=0.25)
  np.testing.assert_allclose(per_weight['conv'], 1 / CURVATURE['conv'], rtol=2e-4)
  # The paper's single-eps formula is biased when the LR changes between the two updates.
  assert float(lr_estimate.estimate_lr(*t, 0.1)) != pytest.approx(exact, rel=1e-2)


def test_from_updates_and_metric_match_snapshots():
  t0, t1, t2 = _snapshots(0.15)
  u0 = jax.tree.map(lambda b, a: b - a, t1, t0)
  u1 = jax.tree.map(lambda c, b: c - b, t2, t1)
  from_snapshots = float(lr_estimate.estimate_lr(t0, t1, t2, 0.15))
  metric = jax.jit(lr_estimate.lr_estimate_metric)(u0, u1, 0.15, 0.15)
  assert float(metric['lr_estimate']) == pytest.approx(from_snapshots, rel=1e-6)
  assert float(metric['lr_estimate_num']) == pytest.approx(0.15 * 12.5, rel=1e-5)
  assert float(metric['lr_estimate_den']) == pytest.approx(0.15 * 38.25, rel=1e-5)
  assert float(lr_estimate.estimate_lr_from_updates(u0, u1, 0.15)) == pytest.approx(
      from_snapshots, rel=1e-6)


def test_jit_and_bfloat16_leaves():
  t = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), _snapshots(0.1))
  est = float(jax.jit(lr_estimate.estimate_lr)(*t, 0.1))
  assert est == pytest.approx(12.5 / 38.25, rel=0.05)  # bf16 snapshots: 3 significant digits


def test_ema_matches_the_authors_recursion():
  est = [2.0, 4.0, 6.0]
  m = lr_estimate.ema_estimates(est)  # m0 = 0.1, decay 0.9
  expected = []
  prev = 0.1
  for e in est:
    prev = 0.9 * prev + 0.1 * e
    expected.append(prev)
  np.testing.assert_allclose(m, expected)
  np.testing.assert_allclose(m, [0.29, 0.661, 1.1949])
  assert float(lr_estimate.ema_update(0.29, 4.0)) == pytest.approx(0.661)
