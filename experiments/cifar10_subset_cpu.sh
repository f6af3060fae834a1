#!/usr/bin/env bash
# The reduced-data story of Table 1 at CPU scale: ResNet-20 (the authors' Caffe net) on a fixed
# 5,000-image CIFAR-10 subset, batch 128, one CLR cycle (500 updates) against the PC-LR step
# schedule scaled to 2x the updates (1,000; x0.1 at 5/8 and 7/8 of the run as 50k/70k of 80k).
# Both use BN moving-average fraction 0.95: at 1,000 updates a 0.999 average would still carry
# a third of its initial value. Max LR 1.0 rather than 3.0: the batch is 8x smaller than the
# paper's. Evaluated on the full 10,000-image test split every 100 updates.
#   bash experiments/cifar10_subset_cpu.sh       # ~35 min on a 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
SEEDS=${SEEDS:-0}
COMMON=(--data "$DATA" --seeds $SEEDS --set data.train_subset=5000 --set batch_size=128
        --set eval_every_steps=100 --set log_every_steps=50 --set model.bn_momentum=0.95
        --set checkpoint_every_steps=500 --set progress_bar=False)
python -m experiments.run --config=configs/resnet20.py --args policy=clr "${COMMON[@]}" \
    --set num_steps=500 --set schedule.step_size=250 --set schedule.max_lr=1.0
python -m experiments.run --config=configs/resnet20.py --args policy=pclr "${COMMON[@]}" \
    --set num_steps=1000 --set "schedule.boundaries=(630, 870)"
python -m experiments.plots \
    --groups "resnet20/$(ls experiments/results/resnet20 | grep '^policy-pclr' | head -1)" \
    "resnet20/$(ls experiments/results/resnet20 | grep '^policy-clr' | head -1)" \
    --labels "PC-LR 0.35, x0.1 at 630/870, 1,000 updates" "CLR 0.1-1.0-0.1, 500 updates" \
    --out experiments/results/resnet20/subset5k_pclr_vs_clr.png \
    --title "ResNet-20, 5,000 CIFAR-10 training images, batch 128, 2-core CPU"
# The range test on the same subset: LR 0 -> 3 over 200 updates at batch 128, the full test
# split every 20 updates (the paper's Fig. 2b reading, at CPU scale).
python -m experiments.run --config=configs/resnet20.py --args policy=lr_range --data "$DATA" \
    --seeds 0 --set data.train_subset=5000 --set batch_size=128 --set model.bn_momentum=0.95 \
    --set lr_range.num_steps=200 --set lr_range.max_lr=3.0 --set lr_range.eval_every_steps=20 \
    --set progress_bar=False
