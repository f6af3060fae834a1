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
# 2. 1cycle, 4 epochs, bounds from the range test's suggestion.
python -m experiments.run --config=$CFG --args "policy=1cycle,epochs=4" --seeds $SEEDS \
    --set lr_range_result=$RANGE --set progress_bar=False
# 3. Caffe's LeNet baselines, 12 epochs at batch 64.
python -m experiments.run --config=$CFG --args "policy=inv,epochs=12" --seeds $SEEDS \
    --set progress_bar=False
python -m experiments.run --config=$CFG --args "policy=step,epochs=12" --seeds ${STEP_SEEDS:-0 1} \
    --set progress_bar=False
