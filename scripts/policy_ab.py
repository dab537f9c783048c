"""Decode-policy (or any app-argument) variants A/B through the real service (issue 6: one
stream's commit lag per recording, and a multi-stream level), alternating the variants block
by block.

    python scripts/policy_ab.py --policy '{}' --policy '{"agree_margin_s": 0.25}' --blocks 2 [--streams 6]
    python scripts/policy_ab.py --args '{}' --args '{"engine": {"cpu_bf16_encoder": "under_load"}}'

Each block starts the app as ``python -m deployments.local serve`` does (ray_config.yaml + the
local layer, embedded redis-server, the real model) with the variant's JSON over the
ingress's decode policy (``--policy``) or over the app's arguments (``--args``), in a process
of its own, warms it with one recording, then plays
one real-time stream of each of the first ``--limit`` long-form recordings in turn and (with
``--streams N``) N streams over them at once.  Prints a row per run and, at the end, the
median [min-max] of each variant's commit-lag p95 per recording.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flood_bench import spread  # noqa: E402  (scripts/: the same median [min-max] cell)

from ingest.loadtest import load_manifest, run_load  # noqa: E402

PORT = 8019


def decodes_by_encoder(url: str) -> dict[str, float]:
    """The ASR replicas' decodes so far by the encoder's precision (Prometheus; Ray exports
    them every few seconds, so a level's count can trail by that much)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ray_rayscribe_decodes_total":
                out[sample.labels.get("encoder", "")] += sample.value
    return dict(out)


def block(args: dict[str, object], manifest: Path, limit: int, streams: int, singles: bool) -> None:
    """One server with ``args`` over the app's arguments; prints one JSON line per run."""
    from ray import serve

    from cluster.redis_server import EmbeddedRedis
    from cluster.runtime import metrics_url
    from deployments.local import start_local

    clips = load_manifest(manifest, limit)
    with EmbeddedRedis() as redis, contextlib.ExitStack() as stack:
        stack.callback(serve.shutdown)
        url = start_local(port=PORT, redis_url=redis.url, args_override=args)
        asyncio.run(run_load(url, clips[:1], 1))  # warm-up: first imports and connections
        levels = [(f"1 stream, {clip.path.stem}", [clip], 1) for clip in clips] if singles else []
        if streams:
            levels.append((f"{streams} streams", clips, streams))
        scrape = metrics_url()
        for name, used, n in levels:
            before = decodes_by_encoder(scrape)
            report, _ = asyncio.run(run_load(url, used, n))
            after = decodes_by_encoder(scrape)
            row = {
                "level": name,
                "commit_p50_s": report.commit_p50_s,
                "commit_p95_s": report.commit_p95_s,
                "partial_p95_s": report.partial_p95_s,
                "sustained": report.sustained,
                "wer": report.wer,
                "decodes_by_encoder": {k: v - before.get(k, 0.0) for k, v in after.items()},
            }
            print("ROW " + json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--policy", action="append", default=[], help="JSON over the decode policy; repeatable"
    )
    parser.add_argument(
        "--args", action="append", default=[], help="JSON over the app's arguments; repeatable"
    )
    parser.add_argument("--blocks", type=int, default=2, help="blocks per variant (alternated)")
    parser.add_argument("--streams", type=int, default=0, help="also N streams at once (0: not)")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument(
        "--no-singles", dest="singles", action="store_false", help="skip the one-stream levels"
    )
    parser.add_argument(
        "--manifest", type=Path, default=ROOT.parent / "shared/evalset/manifest_longform.jsonl"
    )
    parser.add_argument("--block", default=None, help=argparse.SUPPRESS)  # internal: run one block
    args = parser.parse_args()
    if args.block is not None:
        block(json.loads(args.block), args.manifest, args.limit, args.streams, args.singles)
        return
    # each variant: its label (the JSON as given) and the app arguments it sets
    variants = {spec: json.dumps({"ingress": {"policy": json.loads(spec)}}) for spec in args.policy}
    variants.update({spec: spec for spec in args.args})
    variants = variants or {"{}": "{}"}
    p95: dict[tuple[str, str], list[float]] = defaultdict(list)
    ray = str(Path(sys.executable).parent / "ray")  # each block's Ray is stopped before the next
    for b in range(args.blocks):
        for spec, app_args in variants.items():
            cmd = [sys.executable, __file__, "--block", app_args, "--limit", str(args.limit)]
            cmd += ["--streams", str(args.streams), "--manifest", str(args.manifest)]
            cmd += [] if args.singles else ["--no-singles"]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            subprocess.run([ray, "stop", "--force"], capture_output=True, check=False)
            if done.returncode != 0:  # its log would otherwise be lost with the captured output
                sys.exit(f"block {b} {spec} failed ({done.returncode}):\n{done.stderr[-4000:]}")
            for line in done.stdout.splitlines():
                if line.startswith("ROW "):
                    row = json.loads(line[4:])
                    p95[(spec, row["level"])].append(row["commit_p95_s"])
                    print(f"block {b} {spec}: {row}", flush=True)
    levels = list(dict.fromkeys(level for _, level in p95))
    print(f"\ncommit lag p95 (s), median [min-max] of {args.blocks} block(s)")
    print("| variant | " + " | ".join(levels) + " |")
    print("|---|" + "---|" * len(levels))
    for spec in variants:
        print(f"| `{spec}` | " + " | ".join(spread(p95[(spec, level)]) for level in levels) + " |")


if __name__ == "__main__":
    main()
