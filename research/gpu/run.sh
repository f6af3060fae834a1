#!/usr/bin/env bash
# The prepared GPU session: the throughput benchmark and the paper's Fig. 1a pair on ONE GPU.
#
#   bash research/gpu/run.sh CIFAR_ARCHIVE OUT_DIR [BUDGET_SECONDS]
#
# 1. The throughput benchmark, batch 1,000: superconv's train step against PyTorch eager.
# 2. Fig. 1a super-convergence: ResNet-56, CLR 0.1-3.0, 10,000 updates at batch 1,000 (BN groups
#    of 125 as the paper's 8 GPUs), evaluated every 100 updates on the full test split.
# 3. If time is left: the benchmark against torch.compile, then the PC-LR baseline (0.35,
#    80k-update schedule) for as many updates as the rest of the budget allows.
# Results go to OUT_DIR/results.tar.gz (the study fig1a_h200 in the experiments/results layout,
# refreshed as runs go),
# OUT_DIR/bench.jsonl and OUT_DIR/log.txt. SMOKE=1 runs the same steps at toy size (CPU check).
set -uo pipefail
ARCHIVE=${1:?CIFAR-10 archive path}
OUT=${2:?output folder}
BUDGET=${3:-540}
DTYPE=${DTYPE:-bfloat16}
START=$(date +%s)
mkdir -p "$OUT"
RES=$(mktemp -d)/results
mkdir -p "$RES"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}
exec > >(tee -a "$OUT/log.txt") 2>&1
elapsed() { echo $(( $(date +%s) - START )); }
pack() { tar czf "$OUT/results.tar.gz.tmp" -C "$(dirname "$RES")" --exclude=checkpoints results \
           && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"; }
( while sleep 20; do pack 2>/dev/null; done ) &
PACKER=$!
trap 'kill $PACKER 2>/dev/null; pack' EXIT

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
python -c "import jax; print('jax', jax.__version__, jax.devices())"

TAG=$([ "$DTYPE" = bfloat16 ] && echo bf16 || echo fp32)  # the arms: clr_TAG, pclr_TAG_STEPS
if [ "${SMOKE:-0}" = 1 ]; then
  TAG=smoke; ARGS="smoke"; BENCH="--model resnet8 --batch 32 --steps 4 --torch eager"; BASE_ARGS="smoke"
  SETS=(--set progress_bar=False)
else
  ARGS="bn_groups=8"; BENCH="--model resnet56 --batch 1000 --steps 60 --torch-steps 20"
  BASE_ARGS="bn_groups=8"
  SETS=(--set progress_bar=False --set model.dtype=$DTYPE --set checkpoint_every_steps=2000
        --set steps_per_dispatch=20)
fi

echo "== [$(elapsed)s] Throughput benchmark: superconv vs PyTorch eager"
python -m benchmarks.throughput $BENCH --dtype "$DTYPE" --out "$OUT/bench.jsonl" --torch eager

echo "== [$(elapsed)s] Fig. 1a: ResNet-56 CLR 0.1-3.0, 10k updates ($DTYPE)"
python -m experiments.run --study fig1a_h200 --arm clr_$TAG --config=configs/resnet56.py \
    --args "$ARGS" --seeds 0 --data "$ARCHIVE" --results "$RES" "${SETS[@]}"
pack

if [ $(( BUDGET - $(elapsed) )) -gt 150 ]; then
  echo "== [$(elapsed)s] Throughput benchmark: superconv vs torch.compile"
  python -m benchmarks.throughput $BENCH --dtype "$DTYPE" --out "$OUT/bench.jsonl" \
      --torch "${TORCH_MODES:-compile}"
fi

# The baseline gets what is left of the budget, at the CLR run's measured speed.
LEFT=$(( BUDGET - $(elapsed) - 60 ))
STEPS=$(python - "$RES" "$LEFT" <<'EOF'
import glob, json, sys
res, left = sys.argv[1], int(sys.argv[2])
s = [json.load(open(p)) for p in glob.glob(f'{res}/fig1a_h200/clr_*/seed0/summary.json')]
ips = s[0]['images_per_sec'] if s else 0
train_s = s[0].get('train_seconds', 0) if s else 0
wall = s[0].get('wall_seconds', 1) if s else 1
# Evaluation, checkpoints and start-up cost the same share of time as in the CLR run.
usable = left * (train_s / wall if wall else 1)
print(max(0, int(usable * ips / 1000 / 100) * 100))
EOF
)
echo "== [$(elapsed)s] PC-LR baseline: $STEPS updates of the 80k schedule"
if [ "${STEPS:-0}" -ge 100 ] || [ "${SMOKE:-0}" = 1 ]; then
  [ "${SMOKE:-0}" = 1 ] && STEPS=4
  python -m experiments.run --study fig1a_h200 --arm pclr_${TAG}_$STEPS \
      --config=configs/resnet56_baseline.py --args "$BASE_ARGS" --seeds 0 \
      --data "$ARCHIVE" --results "$RES" "${SETS[@]}" --set stop_after_steps=$STEPS
fi
echo "== [$(elapsed)s] done"
