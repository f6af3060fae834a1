#!/usr/bin/env bash
# Fig. 4b of Smith & Topin 2017 at CPU scale: the authors' ResNet-20 on a fixed 5,000-image
# CIFAR-10 subset, batch 128, one CLR cycle (500 updates) against the PC-LR step schedule scaled
# to 2x the updates (1,000; x0.1 at 5/8 and 7/8 of the run as 50k/70k of 80k), and a range test
# on the same subset (LR 0 -> 3 over 200 updates, the full test split every 20). Both runs use
# BN moving-average fraction 0.95 (at 1,000 updates a 0.999 average would still carry a third of
# its initial value) and max LR 1.0 rather than 3.0 (the batch is 8x smaller than the paper's).
# Arms of the study experiments/results/fig4b_cpu/ (its manifest.json).
#   DATA=/path/to/cifar10-jpeg.tar.gz bash research/fig4b_cpu/run_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the CIFAR-10 archive}
SEEDS=${SEEDS:-0}
RES=experiments/results/fig4b_cpu
COMMON=(--study fig4b_cpu --data "$DATA" --seeds $SEEDS --set data.train_subset=5000
        --set batch_size=128 --set eval_every_steps=100 --set log_every_steps=50
        --set model.bn_momentum=0.95 --set checkpoint_every_steps=500 --set progress_bar=False)
python -m experiments.run --arm clr_5k --config=configs/resnet20.py --args policy=clr \
    "${COMMON[@]}" --set num_steps=500 --set schedule.step_size=250 --set schedule.max_lr=1.0
python -m experiments.run --arm pclr_5k --config=configs/resnet20.py --args policy=pclr \
    "${COMMON[@]}" --set num_steps=1000 --set "schedule.boundaries=(630, 870)"
python -m experiments.plots --groups fig4b_cpu/pclr_5k fig4b_cpu/clr_5k \
    --labels "PC-LR 0.35, x0.1 at 630/870, 1,000 updates" "CLR 0.1-1.0-0.1, 500 updates" \
    --out $RES/pclr_vs_clr.png \
    --title "ResNet-20, 5,000 CIFAR-10 training images, batch 128, 2-core CPU"
python -m experiments.run --arm range_5k --study fig4b_cpu --config=configs/resnet20.py \
    --args policy=lr_range --data "$DATA" --seeds 0 --set data.train_subset=5000 \
    --set batch_size=128 --set model.bn_momentum=0.95 --set lr_range.num_steps=200 \
    --set lr_range.max_lr=3.0 --set lr_range.eval_every_steps=20 --set progress_bar=False
