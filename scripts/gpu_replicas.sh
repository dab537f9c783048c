#!/usr/bin/env bash
# Engine processes (ASR replicas) per GPU, on a GPU machine without Ray:
#   scripts/gpu_replicas.sh MODEL_DIR MANIFEST OUT_DIR
# For each "E:LEVELS" in PLAN (default "3:256,320,384 2:256 1:256"), the capacity ramp of
# scripts/inproc_capacity.py with E engine processes sharing the one GPU (LEVELS: streams,
# comma-separated; the ramp stops once commit p95 passes 2 s), each within RUN_TIMEOUT s (a
# level takes ~90 s: ~55 s of audio, the rest starting workers and, for the first, engines).
# One engine process used one whole core while the GPU was ~20 % busy (README, GPU fourth pass):
# this measures whether more of them, as replicas with `num_gpus` below 1, raise the streams.
# Environment: PLAN, RUN_TIMEOUT (default 240), WORKERS (default 12: a multiple of each E, so
# the engines share the streams evenly), DEVICE (default cuda).  Buffer, batch size, batch wait
# and CUDA graphs are the GPU layer's (cluster/layers/gpu.yaml, what the replicas deploy with);
# VAD on, the 0.5 s step and encode_pad_s 5 are the GPU passes' benchmark settings.
set -u
model=$1 manifest=$(realpath "$2") out=$3
mkdir -p "$out"
export PYTHONUNBUFFERED=1
here=$(pwd)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
nproc | tee -a "$out/gpu.txt"
for spec in ${PLAN:-3:256,320,384 2:256 1:256}; do
  engines=${spec%%:*} levels=${spec#*:}
  echo "== $engines engine(s): ${levels//,/ } streams ($(date -u +%T))"
  PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" timeout "${RUN_TIMEOUT:-240}" python3 scripts/inproc_capacity.py \
    --manifest "$manifest" --limit 4 --device "${DEVICE:-cuda}" --model-dir "$model" --layer gpu \
    --step 0.5 --policy '{"vad":{"enabled":true},"settle_s":4.0}' \
    --engine '{"encode_pad_s":5.0}' --workers "${WORKERS:-12}" \
    --engines "$engines" --streams ${levels//,/ } --stop-above 2.0 --out "$out/capacity_e$engines.json" \
    2>&1 | grep -v Warning | tee "$out/capacity_e$engines.log"
done
