"""What every program builds from its config before it runs: one function, `build`.

The training run (`superconv.train`), the evaluation (`superconv.evaluate`) and the LR range
test build the same pieces in the same order: the device mesh, the input data (bad data fails
here, before anything is compiled), the model, the optimizer, the step's static settings, the
maker of the initial state, and (for a program that keeps checkpoints) the checkpointer. One
function builds them, so the three cannot drift apart (the same seed gives the same initial
weights in each).

  setup = build(config, workdir)           # config resolved by configure.resolve
  state, step = setup.checkpointer.restore_latest(setup.abstract_state())
  state = state if state is not None else setup.init()
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import ml_collections
import optax

from superconv import checkpoint as ckpt_lib
from superconv import inputs as inputs_lib
from superconv import optim
from superconv import sharding
from superconv import step as step_lib


@dataclasses.dataclass(frozen=True)
class Setup:
  """The pieces of one program run (see the module docstring)."""
  mesh: jax.sharding.Mesh
  inputs: Any                     # inputs_lib.open_inputs: feed(), evaluator(), num_classes, ...
  model: Any                      # a Flax module (Linen or NNX spec) from step_lib.build_model
  tx: optax.GradientTransformation
  spec: step_lib.StepSpec
  init: Callable[[], Any]         # () -> the initial TrainState on `mesh` (config.seed)
  checkpointer: ckpt_lib.Checkpointer | None

  def abstract_state(self) -> Any:
    """The state's shapes, dtypes and shardings, without computing it (for a restore)."""
    return step_lib.abstract_state(self.init)


def build(config: ml_collections.ConfigDict, workdir: str | None = None, *, devices=None,
          **input_options) -> Setup:
  """Builds the pieces of `config`'s run (a resolved config, `configure.resolve`).

  Args:
    config: the run's config.
    workdir: where its checkpoints live (None: no checkpointer, e.g. a range test).
    devices: the devices of the mesh (default: every device of every process).
    **input_options: passed to `inputs.open_inputs` (the range test's held-out split).

  Raises:
    DataError: the data cannot be read (before any model is built or compiled).
  """
  mesh = sharding.make_mesh(devices)
  inputs = inputs_lib.open_inputs(config, **input_options)
  model = step_lib.build_model(config, inputs.num_classes)
  tx = optim.create_optimizer(config)
  init = functools.partial(
      step_lib.create_train_state, model, tx, jax.random.PRNGKey(config.seed),
      inputs.image_shape, mesh, lr_estimate=bool(config.lr_estimate.enabled))
  checkpointer = (ckpt_lib.Checkpointer(workdir, keep=config.keep_checkpoints)
                  if workdir is not None else None)
  return Setup(mesh=mesh, inputs=inputs, model=model, tx=tx,
               spec=step_lib.StepSpec.from_config(config), init=init, checkpointer=checkpointer)
