#!/usr/bin/env bash
# The prepared GPU performance session (one H200, 10 minutes or less): where the step's time goes.
# Every variant is one row of OUT_DIR/perf.jsonl (benchmarks.throughput, the same process layout
# as benchmarks/results/h200_session2.jsonl); then Fig. 1a with the fastest bf16 variant.
#
#   bash research/gpu/perf.sh CIFAR_ARCHIVE OUT_DIR [BUDGET_SECONDS]
#   TOY=1 bash research/gpu/perf.sh - /tmp/toy       # CPU check: LeNet, batch 16, 4 updates
#
# Rows (ResNet-56, batch 1,000, bf16 compute unless named):
#   baseline       today's step (the pytree state), 10 updates per dispatch (lax.scan)
#   packed         the packed state (step.pack: 3 buffers instead of 568 arrays)
#   cmdbuf_while   packed + XLA command buffers (CUDA graphs) extended to the loop: WHILE added
#                  to the default command types
#   cmdbuf_unroll  the same + --xla_gpu_command_buffer_unroll_loops (the loop body unrolled into
#                  one graph)
#   fp32           fp32 compute, packed (docs/performance.md's fp32 row: 32,049 img/s, pytree)
#   fp32_nhwc      fp32 + --xla_gpu_force_conv_nhwc=true
#   profile        the fastest bf16 variant again under jax.profiler: the trace and its kernel
#                  breakdown (OUT_DIR/profile/, the row's 'kernel_breakdown'); nsys stats too
#                  where nsys is installed
# Then OUT_DIR/dispatch.json (host cost of one dispatch, pytree vs packed, ResNet-56 and -20),
# OUT_DIR/range_test.json (updates/s of an LR range-test sweep against training) and, if the
# budget allows, Fig. 1a (configs/resnet56.py, bn_groups=8, bf16) with the fastest variant's
# flags in OUT_DIR/results (the study fig1a_perf). On the CPU (TOY=1) the GPU-only XLA flags are skipped (XLA:CPU may
# abort on them); each row records the flags it ran with.
set -uo pipefail
ARCHIVE=${1:?CIFAR-10 archive path ('-' with TOY=1)}
OUT=${2:?output folder}
BUDGET=${3:-600}
START=$(date +%s)
mkdir -p "$OUT/results"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}
exec > >(tee -a "$OUT/log.txt") 2>&1
elapsed() { echo $(( $(date +%s) - START )); }
BASE_FLAGS=${XLA_FLAGS:-}
if [ "${TOY:-0}" = 1 ]; then
  MODEL=lenet; BATCH=16; STEPS=4; K=2; DMODELS=lenet; DBATCH=8; RSTEPS=4; GPU=0
  FIG=(--config=configs/resnet56.py --args tiny --set data.source=fake)
else
  MODEL=resnet56; BATCH=1000; STEPS=60; K=10; DMODELS=resnet56,resnet20; DBATCH=1000
  RSTEPS=50; GPU=1
  FIG=(--config=configs/resnet56.py --args bn_groups=8 --data "$ARCHIVE"
       --set checkpoint_every_steps=2000 --set steps_per_dispatch=20)
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
python -c "import jax; print('jax', jax.__version__, jax.devices())"

# row NAME DTYPE "GPU XLA FLAGS" [benchmark options...]: one benchmark row; the GPU flags are
# dropped on the CPU. A failed row is recorded as such and the session goes on.
row() {
  local name=$1 dtype=$2 gflags=$3; shift 3
  local flags=$BASE_FLAGS
  [ "$GPU" = 1 ] && flags="$BASE_FLAGS $gflags"
  echo "== [$(elapsed)s] $name (XLA_FLAGS='$flags')"
  if ! XLA_FLAGS="$flags" python -m benchmarks.throughput --model $MODEL --batch $BATCH \
      --steps $STEPS --steps-per-dispatch $K --dtype "$dtype" --torch '' --variant "$name" \
      --out "$OUT/perf.jsonl" "$@"; then
    echo "{\"variant\": \"$name\", \"xla_flags\": \"$flags\", \"error\": \"failed, see log.txt\"}" \
        >> "$OUT/perf.jsonl"
    return 1
  fi
}
CMDBUF="--xla_gpu_enable_command_buffer=+WHILE"
# If this XLA does not take the '+TYPE' form, the explicit set: today's defaults plus WHILE.
CMDBUF_LIST="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE"
row baseline bfloat16 ""
row packed bfloat16 "" --packed
row cmdbuf_while bfloat16 "$CMDBUF" --packed || { CMDBUF=$CMDBUF_LIST; row cmdbuf_while bfloat16 "$CMDBUF" --packed; }
row cmdbuf_unroll bfloat16 "$CMDBUF --xla_gpu_command_buffer_unroll_loops=true" --packed
row fp32 float32 "" --packed
row fp32_nhwc float32 "--xla_gpu_force_conv_nhwc=true" --packed

# The fastest bf16 row (on the CPU all rows run the same flags; the choice is still exercised).
BEST=$(python - "$OUT/perf.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = [r for r in rows if 'runs' in r and r['dtype'] == 'bfloat16']
best = max(ok, key=lambda r: r['runs'][0]['images_per_sec'])
print(json.dumps({'variant': best['variant'], 'xla_flags': best['xla_flags'],
                  'packed': best['runs'][0]['packed_state'],
                  'images_per_sec': best['runs'][0]['images_per_sec']}))
PY
)
echo "$BEST" > "$OUT/best.json"
BEST_FLAGS=$(python -c "import json,sys; print(json.load(open('$OUT/best.json'))['xla_flags'])")
BEST_PACKED=$(python -c "import json; print('--packed' if json.load(open('$OUT/best.json'))['packed'] else '')")
echo "== [$(elapsed)s] fastest bf16 variant: $BEST"

echo "== [$(elapsed)s] profile of the fastest variant"
XLA_FLAGS="$BEST_FLAGS" python -m benchmarks.throughput --model $MODEL --batch $BATCH \
    --steps $K --steps-per-dispatch $K --torch '' --variant profile $BEST_PACKED \
    --profile "$OUT/profile" --out "$OUT/perf.jsonl" || echo "profile failed"
if command -v nsys >/dev/null 2>&1 && [ "$GPU" = 1 ]; then
  XLA_FLAGS="$BEST_FLAGS" timeout 120 nsys profile -o "$OUT/profile/nsys" --force-overwrite true \
      --stats=true python -m benchmarks.throughput --model $MODEL --batch $BATCH --steps $K \
      --steps-per-dispatch $K --torch '' $BEST_PACKED > "$OUT/profile/nsys_stats.txt" 2>&1 \
      || echo "nsys failed"
fi

echo "== [$(elapsed)s] dispatch: host cost of one call, pytree vs packed state"
XLA_FLAGS="$BEST_FLAGS" python -m benchmarks.throughput --dispatch $DMODELS --batch $DBATCH \
    --reps 5 --calls 100 --out "$OUT/dispatch.json" || echo "dispatch failed"
echo "== [$(elapsed)s] range test: sweep updates/s against training"
XLA_FLAGS="$BEST_FLAGS" python -m benchmarks.throughput --range-test $MODEL --batch $BATCH \
    --steps $RSTEPS --reps 3 --out "$OUT/range_test.json" || echo "range test failed"

LEFT=$(( BUDGET - $(elapsed) ))
# Fig. 1a took 238 s on the H200 (22 s of it compiling): run it with 260 s or more left.
if [ "$LEFT" -gt 260 ] || [ "${TOY:-0}" = 1 ]; then
  echo "== [$(elapsed)s] Fig. 1a with the fastest variant ($LEFT s left)"
  XLA_FLAGS="$BEST_FLAGS" python -m experiments.run --study fig1a_perf --arm clr_bf16_best \
      "${FIG[@]}" --seeds 0 \
      --results "$OUT/results" --set progress_bar=False --set model.dtype=bfloat16
else
  echo "== [$(elapsed)s] Fig. 1a skipped: $LEFT s left"
fi
echo "== [$(elapsed)s] done"
