#!/usr/bin/env bash
# Two builds of the app's config on one GPU machine, each through the real Serve path
# (scripts/gpu_serve.sh, each its own server), in one device call: the shipped config
# ("after") first, then the same with a layer over it ("before"), so a lease that runs out
# still brings the shipped figure back.
#   scripts/gpu_ab.sh MODEL_DIR MANIFEST OUT_DIR
# BEFORE: the layer for the other build (default: decodes not gathered, stop 28's lever off:
# `ingress.decode_gather_s: 0`); AFTER_LEVELS (default "200x3") and BEFORE_LEVELS ("200x2"):
# gpu_serve.sh's LEVELS for each (~1 min a run of the four ~53 s clips, ~1 min a server
# start: the defaults fit one 10-minute call).  Other gpu_serve.sh settings (INGRESS, PROCS,
# GPUS, MAX_P95) pass through.  OUT_DIR gets each build's summary.md as after.md / before.md
# and its whole folder as after.tar.xz / before.tar.xz: four files, within what a device call
# brings back (8).
set -u
model=$1 manifest=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
before=${BEFORE:-}
if [ -z "$before" ]; then
  before=$(mktemp --suffix=.yaml)
  printf 'applications:\n  rayscribe:\n    args:\n      ingress: {decode_gather_s: 0.0}\n' >"$before"
fi
run() {  # NAME LEVELS [LAYER]
  local dir
  dir=$(mktemp -d)/$1
  echo "=== $1 ($(date -u +%T))"
  LEVELS=$2 LAYER=${3:-} "$here/gpu_serve.sh" "$model" "$manifest" "$dir"
  cp "$dir/summary.md" "$out/$1.md" 2>/dev/null
  tar -C "$(dirname "$dir")" -cJf "$out/$1.tar.xz" "$1"
}
run after "${AFTER_LEVELS:-200x3}"
run before "${BEFORE_LEVELS:-200x2}" "$before"
