"""The packed state (`step.pack`): exact round trips, and the packed step updates as the pytree
step does (weights, BN statistics, optimizer state, key, step, loss sums): bit for bit on 1
device, to float32 rounding on 4 (integers exact), one update per dispatch or several
(lax.scan); the logged global norms within 4 ulps."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from superconv import models
from superconv import sharding
from superconv import step as step_lib


def _problem(n=64):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
  return {'images': images, 'labels': rng.integers(0, 10, size=(n,)).astype(np.int32),
          'mean': images.astype(np.float32).mean(0)}


def _setup(num_devices, lr_estimate=False):
  mesh = sharding.make_mesh(jax.devices()[:num_devices])
  model = models.create_model('resnet8', num_classes=10, bn_momentum=0.9)
  # Injected hyperparameters (scalars in the state), weight decay, a schedule: a state with
  # float32, int32 and uint32 leaves, like the training run's.
  tx = optax.chain(optax.add_decayed_weights(1e-4), optax.inject_hyperparams(optax.sgd)(
      learning_rate=optax.linear_schedule(0.3, 0.01, 10), momentum=0.9))
  spec = step_lib.StepSpec(batch_size=16, mirror=True, crop_padding=2, scale=1 / 64,
                           lr_estimate_ema=0.9 if lr_estimate else 0.0)
  state = step_lib.create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 3), mesh,
                                      lr_estimate=lr_estimate)
  return mesh, model, tx, spec, state, sharding.replicate(_problem(), mesh)


# Logged diagnostics only (never read by the update): global reductions that XLA:CPU may split
# differently across its threads in the two programs on 4 devices (see step.make_train_fn).
DIAGNOSTICS = ("['param_norm']", "['estimate']", "['estimate_ema']")


def _assert_identical(a, b, diagnostics_ulps=0, rounding=False):
  """Leaf by leaf: bit for bit, diagnostics within `diagnostics_ulps`, and with `rounding` every
  float leaf to float32 rounding (a packing or aliasing bug moves values by far more)."""
  la, ta = jax.tree_util.tree_flatten_with_path(jax.device_get(a))
  lb, tb = jax.tree.flatten(jax.device_get(b))
  assert ta == tb
  for (path, x), y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    name = jax.tree_util.keystr(path)
    if diagnostics_ulps and name.endswith(DIAGNOSTICS):
      np.testing.assert_array_max_ulp(x, y, maxulp=diagnostics_ulps)
    elif rounding and np.issubdtype(x.dtype, np.floating):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7, err_msg=name)
    else:
      np.testing.assert_array_equal(x, y, err_msg=name)  # bit for bit (NaN-free states)


def test_pack_unpack_round_trips_exactly():
  *_, state, _ = _setup(1, lr_estimate=True)
  packed = step_lib.pack(state)
  # One buffer per dtype: float32 (weights, statistics, optimizer, sums), int32, uint32 (key).
  assert packed.layout.dtypes == ('float32', 'int32', 'uint32')
  assert [b.ndim for b in packed.buffers] == [1, 1, 1]
  assert sum(b.size for b in packed.buffers) == sum(x.size for x in jax.tree.leaves(state))
  _assert_identical(step_lib.unpack(packed), state)
  _assert_identical(step_lib.as_state(packed), state)
  assert step_lib.as_state(state) is state
  # Packing again gives the same buffers, and the layout is static (a hashable jit key).
  again = step_lib.pack(step_lib.unpack(packed))
  for x, y in zip(packed.buffers, again.buffers):
    np.testing.assert_array_equal(x, y)
  assert hash(packed.layout) == hash(again.layout) and packed.layout == again.layout


@pytest.mark.parametrize('num_devices,steps_per_call,calls', [(1, 1, 3), (4, 1, 3), (4, 2, 2)])
def test_packed_step_updates_as_the_pytree_step(num_devices, steps_per_call, calls):
  mesh, model, tx, spec, state, data = _setup(num_devices, lr_estimate=True)
  plain = step_lib.make_train_fn(model, tx, mesh, spec, steps_per_call)
  packed_fn = step_lib.make_train_fn(model, tx, mesh, spec, steps_per_call, packed=True)
  packed = step_lib.pack(state)
  with warnings.catch_warnings():
    # Donation must alias the packed buffers: XLA warns when a donated buffer goes unused.
    warnings.filterwarnings('error', message='.*donated buffers were not usable.*')
    for _ in range(calls):
      state = plain(state, data)
      packed = packed_fn(packed, data)
  assert int(state.step) == steps_per_call * calls
  ulps = 4
  # On 4 devices the two programs may order a cross-device sum differently: one weight of 9,216
  # came out 1 ulp apart on jaxlib 0.12.0.1 on a loaded machine (bit for bit elsewhere).
  rounding = num_devices > 1
  _assert_identical(step_lib.unpack(packed), state, ulps, rounding)
  assert packed_fn._cache_size() == 1  # pylint: disable=protected-access
  # The log-row reader and the sums reset give the same on either form.
  _assert_identical(step_lib.log_values(packed), step_lib.log_values(state), ulps, rounding)
  _assert_identical(step_lib.unpack(step_lib.reset_sums(packed)), step_lib.reset_sums(state),
                    ulps, rounding)


def test_pop_loss_on_the_packed_state():
  # The packed step of the 1-device case above: read from the session's compilation cache.
  mesh, model, tx, spec, state, data = _setup(1, lr_estimate=True)
  packed = step_lib.make_train_fn(model, tx, mesh, spec, 1, packed=True)(step_lib.pack(state), data)
  want = float(step_lib.unpack(packed).sums['loss'])
  loss, packed = step_lib.make_pop_loss(mesh)(packed)
  assert isinstance(packed, step_lib.PackedState)
  assert float(loss) == want and float(step_lib.unpack(packed).sums['loss']) == 0.0


def test_a_state_of_another_layout_is_rejected():
  *_, state, _ = _setup(1)
  layout = step_lib.pack_layout(state)
  other = state.replace(aux={'x': jnp.zeros(())})
  with pytest.raises(ValueError, match='packed layout'):
    step_lib._pack(other, layout)  # pylint: disable=protected-access
