#!/usr/bin/env bash
# Is the range test's answer any good? Three protocols, each: the range test of a 1cycle run (3
# repeats with different data orders, read on images held out of training), the run fed its
# median suggestion (`lr_range_result`) under each effective-step rule, and the same run at each
# peak LR of a grid (base = peak / 10), seeds 0 and 1. Arms of the study
# experiments/results/range_trust/ (its manifest.json); research/range_trust/README.md says what
# each protocol is. Every finished seed is skipped on a rerun.
#   DATA=/path/to/cifar10-jpeg.tar.gz bash research/range_trust/run_cpu.sh   # all three
#   PROTOCOL=lenet12 bash research/range_trust/run_cpu.sh                    # one protocol
#   ARMS=cyclical PROTOCOL=lenet12 bash research/range_trust/run_cpu.sh      # one arm
#   RULES=cap ARMS=cyclical PROTOCOL=resnet20 bash ...                       # one rule
set -uo pipefail
cd "$(dirname "$0")/../.."
export XLA_FLAGS="${XLA_FLAGS:-} $(python -m superconv.platform xla-flags)"
RUN="python -m experiments.run --study range_trust --set progress_bar=False"
SEEDS=${SEEDS:-0 1}
REPORT="python -m research.range_trust.report"

# sweep_and_feed ARM SWEEP_SETS...: within `protocol` (its config, args, name, tag, run sets and
# fed rules): the range test (3 repeats) as arm TAG_sweep[_ARM], a copy of its result at a short
# path (`--result-name` names it, one per protocol and reading), and the run fed it under each
# rule of $rules as arm TAG_fed[_ARM]_RULE, seeds $SEEDS.
sweep_and_feed() {
  local kind=$1 suffix="" result; shift
  [ "$kind" = accuracy ] || suffix=_$kind
  result=experiments/results/$($REPORT --result-name $name "$@")
  $RUN --arm ${tag}_sweep$suffix --config=$config --args "$args" --seeds 0 "${run[@]}" \
      --set mode=lr_range --set lr_range.repeats=3 "$@"
  cp "$($REPORT --find-sweep $name "$@" --set lr_range.repeats=3)" $result
  for rule in ${RULES:-$rules}; do
    $RUN --arm ${tag}_fed${suffix}_$rule --config=$config --args "$args" --seeds $SEEDS \
        "${run[@]}" --set "lr_range_result=$result" --set lr_range.effective_step=$rule
  done
}

# protocol CONFIG ARGS NAME TAG "GRID" SWEEP_SETS... -- RUN_SETS...  (NAME: a report protocol)
# Its arms, in this order, those named in $arms (the caller's; $ARMS overrides it):
#   accuracy  the range test (accuracy reading, the momentum held at the cycle's start) and the
#             runs fed it under each rule of $rules (the caller's)
#   grid      the run at each peak of GRID
#   loss      the fastai preset's reading: an exponential sweep 1e-7 -> 10 over 100 updates,
#             the suggestion the valley of the training loss
#   cyclical  the accuracy reading of the same sweep with the momentum falling from the
#             cycle's max to its min as the LR rises (`lr_range.momentum=cyclical`), fed
#             under cap only
protocol() {
  local config=$1 args=$2 name=$3 tag=$4 grid=$5; shift 5
  local sweep=() run=() todo=" ${ARMS:-${arms:-accuracy grid loss cyclical}} "
  while [ "$1" != -- ]; do sweep+=("$1"); shift; done; shift
  run=("$@")
  [[ $todo != *" accuracy "* ]] || sweep_and_feed accuracy "${sweep[@]}"
  if [[ $todo == *" grid "* ]]; then
    for peak in $grid; do
      base=$(python -c "print($peak / 10)")
      $RUN --arm ${tag}_p$(python -c "print(f'{$peak:g}')") --config=$config --args "$args" \
          --seeds $SEEDS "${run[@]}" --set schedule.max_lr=$peak --set schedule.base_lr=$base
    done
  fi
  [[ $todo != *" loss "* ]] || sweep_and_feed loss --set lr_range.reading=loss \
      --set lr_range.mode=exp --set lr_range.min_lr=1e-7 --set lr_range.max_lr=10.0 \
      --set lr_range.num_steps=100 --set lr_range.eval_every_steps=50 \
      --set lr_range.eval_examples=1000
  [[ $todo != *" cyclical "* ]] || rules=cap sweep_and_feed cyc "${sweep[@]}" \
      --set lr_range.momentum=cyclical
}

# LeNet on Fashion-MNIST, the paper's 1cycle at TBS 512 over 4 epochs (468 updates); the grid's
# 0.3 and its `match` run with seeds 2 and 3 too (one of their first runs diverged).
lenet() {
  local rules="match cap"
  protocol configs/lenet_fashion_mnist.py policy=1cycle,epochs=4 lenet_fashion_mnist lenet4 \
      "0.03 0.06 0.12 0.3 0.6" --set lr_range.num_steps=40 --set lr_range.max_lr=0.3 \
      --set lr_range.eval_every_steps=2 --set lr_range.eval_examples=2000 --
  local more=(--config=configs/lenet_fashion_mnist.py --args policy=1cycle,epochs=4 --seeds 2 3)
  $RUN --arm lenet4_p0.3 "${more[@]}" --set schedule.max_lr=0.3 --set schedule.base_lr=0.03
  $RUN --arm lenet4_fed_match "${more[@]}" \
      --set lr_range_result=experiments/results/range_trust/lenet4_lr_range.json \
      --set lr_range.effective_step=match
}

# The same sweep before the paper's 12-epoch LeNet run (1,406 updates), fed under cap only.
lenet12() {
  local rules=cap arms="accuracy grid cyclical"
  protocol configs/lenet_fashion_mnist.py policy=1cycle,epochs=12 lenet_fashion_mnist_12 \
      lenet12 "0.06 0.12 0.03 0.3" --set lr_range.num_steps=40 --set lr_range.max_lr=0.3 \
      --set lr_range.eval_every_steps=2 --set lr_range.eval_examples=2000 --
}

# ResNet-20 on a 10,000-image CIFAR-10 subset, Smith 2018's 1cycle over 400 updates.
resnet20() {
  local rules="match cap"
  protocol configs/resnet20.py policy=1cycle resnet20 r20 "0.03 0.1 0.3 1.0 3.0" \
      --set lr_range.num_steps=300 --set lr_range.max_lr=0.5 --set lr_range.eval_every_steps=15 \
      --set lr_range.eval_examples=1000 -- --data "${DATA:?set DATA to the CIFAR-10 archive}" \
      --set data.train_subset=10000 --set batch_size=64 --set model.virtual_batch_size=0 \
      --set num_steps=400 --set schedule.step_size=180 --set eval_every_steps=400 \
      --set checkpoint_every_steps=400 --set log_every_steps=50
}

case ${PROTOCOL:-all} in
  lenet) lenet ;;
  lenet12) lenet12 ;;
  resnet20) resnet20 ;;
  *) lenet; lenet12; resnet20 ;;
esac
$REPORT
