#!/usr/bin/env bash
# LeNet on real Fashion-MNIST (Debian's IDX files), CPU: the range test, then 1cycle with the
# range it suggests against Caffe's `inv` and `step` baselines, several seeds each.
#   bash experiments/fashion_mnist.sh            # ~35 min on a 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/.."
CFG=configs/lenet_fashion_mnist.py
RES=experiments/results/lenet_fashion_mnist
SEEDS=${SEEDS:-0 1 2}
# 1. Range test: LR 0 -> 0.2 over 2 epochs at batch 512, test accuracy every 10 updates.
python -m experiments.run --config=$CFG --args "policy=lr_range,epochs=2" --seeds 0 \
    --set lr_range.eval_every_steps=10 --set progress_bar=False
RANGE=$(ls -d $RES/*policy-lr_range*/seed0 | head -1)/lr_range.json
# 2. 1cycle, 4 epochs, LR bounds from the range test's suggestion. Momentum cycles 0.9 -> 0.8:
#    the range test ran at momentum 0.9, so the cycle starts where the test says the LR is safe.
#    With the 2018 LeNet settings (0.95 -> 0.8, Nesterov) these bounds diverged at update 30
#    (LR 0.046, momentum 0.93): the effective step lr / (1 - momentum) was twice the test's.
python -m experiments.run --config=$CFG --args "policy=1cycle,epochs=4" --seeds $SEEDS \
    --set lr_range_result=$RANGE --set optimizer.nesterov=False \
    --set momentum_schedule.max_momentum=0.9 --set progress_bar=False
# 3. Caffe's LeNet baselines, 12 epochs at batch 64.
python -m experiments.run --config=$CFG --args "policy=inv,epochs=12" --seeds $SEEDS \
    --set progress_bar=False
python -m experiments.run --config=$CFG --args "policy=step,epochs=12" --seeds ${STEP_SEEDS:-0 1} \
    --set progress_bar=False
# 4. The comparison plot, by epochs (the policies use different batch sizes).
ONE=$(ls -d $RES/epochs-4_policy-1cycle* | head -1 | xargs basename)
python -m experiments.plots --groups "lenet_fashion_mnist/epochs-12_policy-inv" \
    "lenet_fashion_mnist/$ONE" --x epochs --out $RES/inv_vs_1cycle.png \
    --labels "Caffe inv, 12 epochs, batch 64" "1cycle (range-test bounds), 4 epochs, batch 512" \
    --title "LeNet on Fashion-MNIST, 2-core CPU"
