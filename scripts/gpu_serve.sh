#!/usr/bin/env bash
# The GPU capacity figure through the real Serve path (issue 6), on one GPU machine:
#   scripts/gpu_serve.sh MODEL_DIR MANIFEST OUT_DIR
# The app as `python -m deployments.local serve --gpus 1` deploys it (ray_config.yaml with the
# local and gpu layers: two ASR replicas at num_gpus 0.5, fp16, CUDA graphs, batches up to 128),
# embedded redis-server, WebSockets through Serve's proxy, and the load tester's capacity search
# (scripts/capacity.py) over the first 4 clips of MANIFEST at real-time pace, one level at a
# time until commit p95 passes MAX_P95.  Beside each level, in OUT_DIR: the app's Prometheus
# series (batch size, queue wait, decode time) and every process's CPU seconds before and
# after (metrics.txt), GPU utilisation each second (dmon.txt), the server's log (server.log);
# at the end their table (summary.md, scripts/gpu_serve_summary.py).
# What the local layer does not fit to this node, a layer written here adds: the engine's
# MODEL_DIR, INGRESS Ingress replicas (each admits 64 sessions; ~0.01 cores per stream, README
# stop 23), a larger object store (each decode's audio window passes through it).
# Environment: LEVELS (default "128 200 256"; N or NxR: R runs at N streams), REPEAT (1: runs
# per level without xR), MAX_P95 (2.0), PROCS (4: load generator processes), INGRESS (6),
# LAYER (a layer file over the rest, e.g. `user_config: {decode_in: thread}` for the ASR replicas),
# GPUS (1; 0: CPU replicas, a dry run of this script).
# A machine without Ray (the lent GPU image): scripts/gpu_pack.sh here, scripts/gpu_unpack.sh there.
set -u
model=$(realpath "$1") manifest=$(realpath "$2") out=$3
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
gpus=${GPUS:-1} max_p95=${MAX_P95:-2.0}
layer=$(mktemp --suffix=.yaml)
cat >"$layer" <<EOF
applications:
  rayscribe:
    args:
      engine: {model_dir: "$model"}
      ingress: {limits: {max_pending: 64}}
    deployments:
      Ingress: {num_replicas: ${INGRESS:-6}}
EOF
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; echo "cpus $(nproc)"; } \
  2>&1 | tee "$out/run.log"
python3 -m deployments.local serve --gpus "$gpus" --layer "$layer" ${LAYER:+--layer "$LAYER"} --object-store-mb 4096 \
  >"$out/server.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server' EXIT
until grep -q "rayscribe is serving at" "$out/server.log"; do
  kill -0 $server 2>/dev/null || { echo "server exited"; tail -40 "$out/server.log"; exit 1; }
  sleep 1  # the server announces itself in its log; nothing else to wait on
done
url=$(grep -o "ws://[^ ]*" "$out/server.log" | head -1)
metrics=$(grep -o "Prometheus metrics at [^ ]*" "$out/server.log" | awk '{print $4}')
echo "serving at $url, metrics at $metrics ($(date -u +%T))" | tee -a "$out/run.log"
snapshot() {  # LABEL: the app's series and each process's CPU seconds, for per-level deltas
  {
    echo "=== $1 $(date -u +%s.%N)"
    python3 -c "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1]).read().decode())" "$metrics" \
      | grep -E "^ray_rayscribe_(batch_size|queue_wait_seconds|decode_seconds|decodes|decode_calls|commit_lag_seconds)"
    echo "--- ps"
    ps -eo pid,times,args --no-headers | cut -c1-160
  } >>"$out/metrics.txt"
}
for level in ${LEVELS:-128 200 256}; do
  n=${level%x*} runs=${REPEAT:-1}
  [ "$n" = "$level" ] || runs=${level#*x}
  echo "== $n streams, $runs run(s) ($(date -u +%T))" | tee -a "$out/run.log"
  snapshot "before $n"
  echo "=== $n" >>"$out/dmon.txt"
  nvidia-smi dmon -s u -d 1 >>"$out/dmon.txt" 2>&1 &
  dmon=$!
  python3 scripts/capacity.py --url "$url" --manifest "$manifest" --limit 4 --streams "$n" \
    --repeat "$runs" --procs "${PROCS:-4}" --max-commit-p95 "$max_p95" --resolution 100000 \
    --out "/tmp/capacity_$n" 2>&1 | grep -v Warning | tee -a "$out/run.log"
  snapshot "after $n"
  kill $dmon 2>/dev/null
  cp "/tmp/capacity_$n/capacity.json" "$out/capacity_$n.json"
  held=$(python3 -c "import json,sys;l=json.load(open(sys.argv[1]))['levels'][0];print(l['held'])" \
    "/tmp/capacity_$n/capacity.json" 2>/dev/null)
  [ "$held" = "True" ] || break
done
python3 scripts/gpu_serve_summary.py "$out" | tee "$out/summary.md"
