#!/usr/bin/env bash
# The README's GPU figures (issue 6) in one go, on a GPU machine without Ray:
#   scripts/gpu_bench.sh MODEL_DIR MANIFEST OUT_DIR [BASE_DIR]
# 1. the engine per batch size (scripts/graph_bench.py, CUDA graphs off and on), and the same
#    for the build in BASE_DIR (an older checkout: same machine, same run) where given;
# 2. where a batch's host time goes (scripts/engine_profile.py);
# 3. the capacity search (scripts/inproc_capacity.py: real sessions in several processes,
#    one batched engine), ramping streams at a 0.5 s decode step until commit p95 passes
#    2 s, after BASE_DIR's harness and engine at the first level.
# Environment: LEVELS (default "128 192 256 320") and REPEAT (default 1) for the ramp; BATCHES
# and PROFILE_BATCH for 1-2; BASE_CAPACITY=0: no baseline capacity level; DEVICE (default cuda;
# cpu with small sizes: a dry run of this script).
set -u
model=$1 manifest=$(realpath "$2") out=$3 base=${4:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
here=$(pwd) device=${DEVICE:-cuda}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
nproc | tee -a "$out/gpu.txt"
bench() {  # DIR LABEL: the engine per batch size, from the checkout in DIR
  (cd "$1" && PYTHONPATH="$1${PYTHONPATH:+:$PYTHONPATH}" timeout 150 python3 scripts/graph_bench.py \
    --device "$device" --model-dir "$model" --batches ${BATCHES:-1 64 128 256} --repeat 5) 2>&1 | grep -v Warning \
    | tee "$out/graph_bench_$2.md"
}
[ -n "$base" ] && bench "$(realpath "$base")" base
bench "$here" new
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" timeout 90 python3 scripts/engine_profile.py --device "$device" \
  --model-dir "$model" --batch "${PROFILE_BATCH:-128}" --repeat 5 --engine '{"graph_max_batch":256}' 2>&1 | head -60 > "$out/engine_profile.txt"
policy='{"vad":{"enabled":true},"settle_s":4.0}'
common=(--manifest "$manifest" --limit 4 --device "$device" --model-dir "$model" --step 0.5
  --policy "$policy")
if [ -n "$base" ] && [ "${BASE_CAPACITY:-1}" = 1 ]; then
  first=${LEVELS:-128}; first=${first%% *}
  (cd "$(realpath "$base")" && PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" python3 scripts/inproc_capacity.py \
    "${common[@]}" --streams "$first" --batch-wait 0.02 --max-batch 64 --engine '{"encode_pad_s":5.0,"graph_max_batch":64}' \
    --out "$out/capacity_base.json") 2>&1 | grep -v Warning | tee "$out/capacity_base.log"
fi
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" python3 scripts/inproc_capacity.py "${common[@]}" \
  --streams ${LEVELS:-128 192 256 320} --repeat "${REPEAT:-1}" --stop-above 2.0 --workers 8 \
  --layer gpu --engine '{"encode_pad_s":5.0}' \
  --out "$out/capacity.json" 2>&1 | grep -v Warning | tee "$out/capacity.log"
