#!/usr/bin/env bash
# The README's GPU figures (issue 6) in one go: the token loop with and without CUDA graphs
# per batch size, the in-process capacity search with graphs, and a graphs-off baseline at
# its first level (same machine, same run).
#   scripts/gpu_bench.sh MODEL_DIR MANIFEST OUT_DIR
set -u
model=$1 manifest=$2 out=$3
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
timeout 120 python3 scripts/graph_bench.py --device cuda --model-dir "$model" --batches 1 8 32 64 --repeat 5 \
  2>&1 | tee "$out/graph_bench.md"
policy='{"vad":{"enabled":true},"settle_s":4.0}'
common=(--manifest "$manifest" --limit 4 --device cuda --model-dir "$model" --max-batch 64 --batch-wait 0.02
  --policy "$policy")
python3 scripts/inproc_capacity.py "${common[@]}" --streams 16 32 64 96 --stop-above 6 \
  --engine '{"encode_pad_s":5.0,"graph_max_batch":64}' --out "$out/inproc_graphs.json" 2>&1 \
  | grep -v Warning | tee "$out/inproc_graphs.log"
python3 scripts/inproc_capacity.py "${common[@]}" --streams 16 \
  --engine '{"encode_pad_s":5.0,"cuda_graphs":false}' --out "$out/inproc_nographs.json" 2>&1 \
  | grep -v Warning | tee "$out/inproc_nographs.log"
