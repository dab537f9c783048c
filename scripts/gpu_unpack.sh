#!/usr/bin/env bash
# On a lent GPU machine, sourced: join the parts scripts/gpu_pack.sh made (copied into
# STAGE_DIR by the device calls), unpack them into DEST (site/, m/, clips/) and point Python
# and the local runner at them:
#   source scripts/gpu_unpack.sh STAGE_DIR DEST
# then scripts/gpu_serve.sh DEST/m DEST/clips/manifest_longform.jsonl OUT.
stage=$1 dest=$2
mkdir -p "$dest" && cat "$stage"/pack.part.* | tar -C "$dest" -xJf - || return 1
export PYTHONPATH="$dest/site${PYTHONPATH:+:$PYTHONPATH}"
export RAYSCRIBE_REDIS_SERVER="$dest/site/redis-server"
python3 -c "import ray, fastapi, redis, pydantic; print('ray', ray.__version__, 'unpacked into', '$dest')"
