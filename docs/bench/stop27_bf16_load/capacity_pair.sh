#!/usr/bin/env bash
# The capacity search at fixed levels with the encoder float32 always and bfloat16 under
# load (the default), each against its own `deployments.local serve`:
#   bash docs/bench/stop27_bf16_load/capacity_pair.sh "2 4 6 7 8" OUT
set -euo pipefail
levels=${1:-"2 4 6 7 8"}
out=${2:-bench-results/stop27}
mkdir -p "$out"
for mode in off under_load; do
  layer="$out/$mode.yaml"
  printf 'applications:\n  rayscribe:\n    args:\n      engine:\n        cpu_bf16_encoder: \"%s\"\n' "$mode" > "$layer"
  .venv/bin/python -m deployments.local serve --port 8023 --layer "$layer" > "$out/$mode.server.log" 2>&1 &
  server=$!
  # the runner prints this line once the app is up
  timeout 300 bash -c "until grep -q 'rayscribe is serving' '$out/$mode.server.log'; do kill -0 $server || exit 1; sleep 1; done"
  # shellcheck disable=SC2086
  .venv/bin/python scripts/capacity.py --url ws://127.0.0.1:8023/v1/stream --streams $levels \
    --repeat 3 --out "$out/$mode" > "$out/$mode.log" 2>&1 || echo "capacity $mode failed"
  kill -INT "$server"; wait "$server" || true
  .venv/bin/ray stop --force > /dev/null 2>&1 || true
done
