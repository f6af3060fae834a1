#!/usr/bin/env bash
# LeNet on real Fashion-MNIST (Debian's IDX files), CPU: the range test, then 1cycle with the
# range it suggests against Caffe's `inv` and `step` baselines, several seeds each. Arms of the
# study experiments/results/lenet_fmnist_range/ (its manifest.json).
#   bash research/lenet_fmnist_range/run_cpu.sh      # ~35 min on a 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/../.."
CFG=configs/lenet_fashion_mnist.py
RES=experiments/results/lenet_fmnist_range
RUN="python -m experiments.run --study lenet_fmnist_range"
SEEDS=${SEEDS:-0 1 2}
# 1. Range test: LR 0 -> 0.2 over 2 epochs at batch 512, test accuracy every 10 updates.
$RUN --arm range_2ep --config=$CFG --args "policy=lr_range,epochs=2" --seeds 0 \
    --set lr_range.eval_every_steps=10 --set progress_bar=False
# 2. 1cycle, 4 epochs, LR bounds from the range test's suggestion. Momentum cycles 0.9 -> 0.8:
#    the range test ran at momentum 0.9, so the cycle starts where the test says the LR is safe
#    (with the 2018 LeNet settings, 0.95 -> 0.8 and Nesterov, these bounds diverge: the effective
#    step lr / (1 - momentum) at the cycle's start is twice the test's).
$RUN --arm 1cycle_4ep_fed --config=$CFG --args "policy=1cycle,epochs=4" --seeds $SEEDS \
    --set lr_range_result=$RES/range_2ep/seed0/lr_range.json --set optimizer.nesterov=False \
    --set momentum_schedule.max_momentum=0.9 --set progress_bar=False
# 3. Caffe's LeNet baselines, 12 epochs at batch 64.
$RUN --arm inv_12ep --config=$CFG --args "policy=inv,epochs=12" --seeds ${INV_SEEDS:-0 1} \
    --set progress_bar=False
$RUN --arm step_12ep --config=$CFG --args "policy=step,epochs=12" --seeds ${STEP_SEEDS:-0} \
    --set progress_bar=False
# 4. The comparison plot, by epochs (the policies use different batch sizes).
python -m experiments.plots --groups lenet_fmnist_range/inv_12ep lenet_fmnist_range/1cycle_4ep_fed \
    --x epochs --out $RES/inv_vs_1cycle.png \
    --labels "Caffe inv, 12 epochs, batch 64" "1cycle (range-test bounds), 4 epochs, batch 512" \
    --title "LeNet on Fashion-MNIST, 2-core CPU"
