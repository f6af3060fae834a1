#!/usr/bin/env bash
# The prepared GPU fidelity session (one H200, 12 minutes or less): what of Fig. 1a's 3.75-point
# gap to the authors' Caffe run is precision, and what is the data?
#
#   bash research/gpu/fidelity.sh CIFAR_ARCHIVE OUT_DIR [BUDGET_SECONDS]
#   TOY=1 bash research/gpu/fidelity.sh /path/to/cifar10-jpeg.tar.gz /tmp/toy   # CPU check
#   (TOY: the same steps, ResNet-8 on generated images, 8 updates: what the test runs)
#
# (a) Fig. 1a CLR (configs/resnet56.py: ResNet-56, CLR 0.1-3.0-0.1, 10,000 updates at batch
#     1,000 in BN groups of 125) in true float32: model.dtype=float32 with
#     jax_default_matmul_precision=highest. 200 updates are timed first; if the whole run would
#     not fit in its share of the budget it runs in TF32 (the default precision) and says so.
# (b) The PyTorch twin (research/torch_twin) on the same recipe and the same JPEG data, in
#     float32 (TF32 off).
# (c) With the time left, a second bf16 seed of (a).
# Results: OUT_DIR/results (the study fig1a_fidelity: arms clr_fp32 or clr_tf32, twin_fp32,
# clr_bf16), OUT_DIR/log.txt, OUT_DIR/timing.json.
set -uo pipefail
ARCHIVE=${1:?CIFAR-10 archive path}
OUT=${2:?output folder}
BUDGET=${3:-690}
START=$(date +%s)
mkdir -p "$OUT/results"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}
exec > >(tee -a "$OUT/log.txt") 2>&1
elapsed() { echo $(( $(date +%s) - START )); }
RUN=(python -m experiments.run --study fig1a_fidelity --data "$ARCHIVE" --results "$OUT/results"
     --set progress_bar=False)
if [ "${TOY:-0}" = 1 ]; then  # the same steps at toy size: ResNet-8, 8 updates, generated images
  CFG="configs/resnet56.py:tiny"; ARGS="tiny"; PROBE=4; N=8
  TWIN=(--depth 8 --subset 0 --steps 8 --step-size 4 --batch 16 --bn-group 0 --max-lr 3.0
        --eval-every 4)
  SETS=(--set data.source=fake)
  TWIN_DATA=fake
  DEVICE=cpu
else
  CFG="configs/resnet56.py"; ARGS=""; PROBE=200; N=10000
  TWIN=(--depth 56 --subset 0 --steps 10000 --step-size 5000 --batch 1000 --bn-group 125
        --max-lr 3.0 --eval-every 100)
  SETS=(--set checkpoint_every_steps=2000 --set steps_per_dispatch=20)
  TWIN_DATA=$ARCHIVE
  DEVICE=cuda
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
python -c "import jax; print('jax', jax.__version__, jax.devices())"

echo "== [$(elapsed)s] (a) probe: $PROBE updates in true float32"
PROBE_DIR=$(mktemp -d)
FLAGS=(); for ((i = 1; i < ${#SETS[@]}; i += 2)); do FLAGS+=("--config.${SETS[i]}"); done
JAX_DEFAULT_MATMUL_PRECISION=highest python -m superconv.main --config=$CFG --workdir="$PROBE_DIR" \
    --config.model.dtype=float32 --config.progress_bar=False --config.num_steps=$PROBE \
    --config.schedule.step_size=$(( PROBE / 2 )) --config.eval_every_steps=$PROBE \
    --config.checkpoint_every_steps=0 "${FLAGS[@]}" > "$OUT/probe.txt" 2>&1
IPS=$(python -c "import json; print(json.load(open('$PROBE_DIR/summary.json'))['images_per_sec'])" 2>/dev/null || echo 0)
# The fp32 run may take half of the budget (the twin and a bf16 seed share the rest).
PRECISION=$(python - "$IPS" "$N" "$BUDGET" "${TOY:-0}" <<'PY'
import sys
ips, n, budget, toy = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == '1'
batch = 16 if toy else 1000
need = n * batch / max(ips, 1e-9) * 1.15  # + evaluations and compilation
print('highest' if toy or need <= budget / 2 else 'default')
PY
)
echo "{\"probe_images_per_sec\": $IPS, \"precision\": \"$PRECISION\"}" > "$OUT/timing.json"
echo "== [$(elapsed)s] (a) Fig. 1a CLR, float32, matmul precision $PRECISION ($IPS img/s in the probe)"
JAX_DEFAULT_MATMUL_PRECISION=$PRECISION "${RUN[@]}" --config=configs/resnet56.py --args "$ARGS" \
    --arm "clr_$([ "$PRECISION" = highest ] && echo fp32 || echo tf32)" --seeds 0 \
    --set model.dtype=float32 "${SETS[@]}"

echo "== [$(elapsed)s] (b) the PyTorch twin of the recipe, float32"
if python -c "import torch" 2>/dev/null; then
  NVIDIA_TF32_OVERRIDE=0 python -m research.torch_twin.torch_twin --data "$TWIN_DATA" \
      --device $DEVICE --seeds 0 --out "$OUT/results/fig1a_fidelity" --name twin_fp32 "${TWIN[@]}"
else
  echo "torch is not installed (pip install -e '.[bench]'): (b) skipped"
fi

LEFT=$(( BUDGET - $(elapsed) ))
if [ "$LEFT" -gt 300 ] || [ "${TOY:-0}" = 1 ]; then
  echo "== [$(elapsed)s] (c) Fig. 1a CLR, bf16, seed 1 ($LEFT s left)"
  "${RUN[@]}" --arm clr_bf16 --config=configs/resnet56.py --args "$ARGS" --seeds 1 \
      --set model.dtype=bfloat16 "${SETS[@]}"
fi
echo "== [$(elapsed)s] done"
