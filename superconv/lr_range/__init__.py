r"""The LR range test (Smith 2017; Smith & Topin 2017, Sec. 3 and Fig. 2) and its reading rules.

The test: train for a short run while the learning rate rises from `min_lr` to `max_lr`
(linearly, as the paper's Fig. 2 sweeps, or exponentially), evaluate on held-out data every k
updates, and read the bounds of a cyclical schedule off the curves.

  python -m superconv.main --config=configs/resnet56_lr_range.py --workdir=/tmp/range
  python -m superconv.main --config=configs/resnet56.py --config.mode=lr_range --workdir=/tmp/r

Any config runs as a range test: `configure.resolve` gives it the sweep's form (schedule.name =
'lr_range', num_steps = lr_range.num_steps; config.lr_range.{min_lr, max_lr, num_steps, mode,
eval_every_steps, ...}); model, data, optimizer, momentum, weight decay and devices are the
training run's.

The package: `core` (`find`: the one sweep, for any loss function, parameters and batches;
jax, optax and numpy only), `reading` (the rules, numpy only), `result` (`RangeTestResult`:
files, plot, `load`, the schedules of the run it feeds), `sweep` (the image-classifier doors:
`run(config, workdir)`, the CLI's, and `range_test(model, ...)`, both clients of `find`; loaded
on first use, as they pull in the data and config modules).

What is recorded (conventions):
  * update s (s = 0 .. n-1) uses lr_s = schedule(s); its training loss is the loss of batch s,
    computed before the update (the pair (lr_s, loss_s), as in fastai's finder);
  * the evaluation after s updates is paired with schedule(s) (Caffe's "Iteration s, Testing"
    line and its lr; the last one is max_lr). The first evaluation is at s = 0, the untrained
    net, so the rise of the accuracy is measured from its start.
  * per-update losses: the sweep dispatches one jitted update per call, which returns its
    loss. Losses stay on the device and are fetched only at evaluation points, so dispatch
    stays asynchronous.

Reading the accuracy curve (`suggest`), the paper's rule (digest §3.2):
  1. Smooth the test accuracy with a centered moving median over `window` evaluations (see
     `smooth_accuracy` for the ends). Real range tests are noisy: ResNet-56 curves jump by
     10-20 points between neighbouring evaluations (digest §6.2), and a median ignores single
     outliers where a mean is dragged by them.
  2. tolerance = max(atol, rtol * (max smoothed accuracy - min raw accuracy)): a fall must be a
     sizeable fraction of the curve's own rise, so noise on a flat curve is not a fall.
  3. "Falls" at the first evaluation whose smoothed accuracy is more than `tolerance` below its
     running maximum. max_lr = the LR of the smoothed peak before that point (rule 'peak', the
     paper's Fig. 2a reading) or the last LR before the fall (rule 'fall', 1803.09820's "when the
     accuracy starts to fall"). min_lr = max_lr / lr_range.min_lr_div_clr for CLR (paper: 3-4)
     and max_lr / lr_range.min_lr_div_1cycle for 1cycle (1803.09820: ~10).
  4. Never falls: `flat=True`, "accuracy never fell: the super-convergence sign" (Fig. 2b:
     ResNet-56 stays high up to LR 3). max_lr = the largest LR tested (`flat_rule='largest'`, as
     the paper's CLR 0.1-3 after its 0-3 sweep) or the smoothed peak (`flat_rule='peak'`).

Beside it, a loss-based reading (`suggest_from_loss`, as fastai's finder): the training loss is
smoothed by a bias-corrected EMA,

  avg_t = beta avg_{t-1} + (1 - beta) loss_t,   smoothed_t = avg_t / (1 - beta^t),

the steepest descent of the smoothed loss against log LR (before its minimum), the middle of the
longest descending run ("valley"), and the LR of the minimum. The sweep stops early when the
smoothed loss exceeds lr_range.diverge_factor x its best so far, or is not finite; it then ends
normally and records `diverged_at`.

Failure modes (read the plot, not only the numbers):
  * Too short a sweep: the accuracy has not risen when the LR is already large, so the curve
    reads the training progress, not the LR; the peak moves with the sweep length (Fig. 2b:
    5k/20k/100k). When the smoothed accuracy never rises by more than lr_range.min_rise
    (default 0.1) above the untrained net's, the suggestion is marked `reliable=False` and
    `apply_suggestion` refuses it: such a curve "never falls" only because the net is still
    learning, which is not the flat curve of super-convergence (ResNet-20 on a CIFAR-10 subset,
    0 -> 1.5 over 100 updates: 10 % -> 18 %, read flat before this rule).
  * Repeats that disagree: with lr_range.repeats = k, fewer than k/2 reliable sweeps make the
    median suggestion unreliable too (`combine`).
  * Flat curves give no upper bound: max_lr is then only a lower bound on the true limit.
  * Noise wider than the window (a run of bad evaluations) reads as a fall; raise `window`.
  * A linear sweep spends few updates at small LRs, so the loss-based readings, defined on a log
    LR axis, are coarse below ~max_lr/100. With BN the loss often falls until the sweep ends and
    the steepest point sits at the start; the accuracy reading is the paper's and the primary one.
  * The LR of a momentum optimizer acts with a lag of about 1/(1 - momentum) updates.
  * On an easy task the best smoothed loss nears 0 and "4 x best" is reached by mere noise;
    raise lr_range.diverge_factor or set it to 0 (then only a non-finite loss stops the sweep).

Python API: `find(loss_fn, params, optimizer, batches, ...)` for any JAX training (see `core`),
and `range_test(model, ...)` for an image classifier (Linen, NNX or a plain function) on
in-memory images. Both work on private copies and never donate the caller's buffers.
`result.schedules('one_cycle', n)` gives the run's optax schedules (the effective-step rule
applied); a saved result (config.lr_range_result = 'path/lr_range.json') sets a CLR or 1cycle
config's LR bounds when the config is resolved (`configure.apply_suggestion`), after its
recorded identity is checked against the run.

Files: `RangeTestResult.save(dir)` writes lr_range.json (every per-update LR and loss, raw and
smoothed; every evaluation; the suggestion and its method; diverged_at; settings and the
identity of what was swept; provenance) and lr_range.png, and never a file a training run owns
(metrics.jsonl, summary.json, config.json, checkpoints/); `load(path)` reads one back. The CLI's
sweep, a run of its own, also writes its workdir's metrics.jsonl and summary.json.

An unreliable reading is not a number: `result.max_lr` (and `min_lr_clr`, `min_lr_1cycle`,
`schedules`, `bounds`) raise `UnreliableReading` naming the reason; the raw value stays in
`result.suggestion['max_lr']` for inspection, and the plot and summary say "unreliable".
"""

import importlib

from superconv.lr_range.core import find
from superconv.lr_range.core import sweep_cost
from superconv.lr_range.reading import divergence_step
from superconv.lr_range.reading import smooth_accuracy
from superconv.lr_range.reading import smooth_loss
from superconv.lr_range.reading import suggest
from superconv.lr_range.reading import suggest_from_loss
from superconv.lr_range.reading import suggest_from_valley
from superconv.lr_range.result import combine
from superconv.lr_range.result import load
from superconv.lr_range.result import PLOT_FILE
from superconv.lr_range.result import RESULT_FILE
from superconv.lr_range.result import RangeTestResult
from superconv.lr_range.result import UnreliableReading

# The image-classifier doors import superconv's data, step and config modules (ml_collections,
# TFDS on demand): loaded on first use, so `find` stays a library of jax, optax and numpy.
_LAZY = {'range_test': 'sweep', 'run': 'sweep', 'PRESETS': 'sweep', 'image_loss_fn': 'sweep'}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(f'superconv.lr_range.{_LAZY[name]}'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['PLOT_FILE', 'PRESETS', 'RESULT_FILE', 'RangeTestResult', 'UnreliableReading',
           'combine', 'divergence_step', 'find', 'image_loss_fn', 'load', 'range_test', 'run',
           'smooth_accuracy', 'smooth_loss', 'suggest', 'suggest_from_loss',
           'suggest_from_valley', 'sweep_cost']
