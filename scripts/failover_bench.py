"""Failover benchmark: kill the ingress replica serving live streams and time the recovery.

    python scripts/failover_bench.py [--streams 1 4 8] [--kill-at 20] [--manifest PATH]

For each level, N long-form evalset recordings stream at real-time pace twice against the
embedded local app (2 ingress replicas, a real redis-server): once with no fault, once with
``ray.kill`` of the ingress replica that serves stream 0, ``--kill-at`` seconds in.  For every
stream that had to resume:

- *disconnect to first new final*: from the moment its socket died to the arrival of the first
  final decoded after the resume (replayed finals excluded);
- *seam commit lag*: commit lag of the words committed after the disconnect whose audio ends
  before the resume point + 5 s, against the same words' level in the no-fault run (p95 - p95).

Writes bench-results/failover.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
from pathlib import Path

from cluster.faults import kill_replica, owner_of
from cluster.redis_server import EmbeddedRedis
from ingest.client import StreamOptions, StreamResult
from ingest.livestreams import LiveStreams, load_audio, wait_until
from ingest.loadtest import load_manifest, percentile

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = ROOT.parent / "shared" / "evalset" / "manifest_longform.jsonl"


def audio_at(result: StreamResult, t: float) -> float:
    """Stream seconds captured by monotonic time ``t``."""
    return max((a for a, at in result.sent if at <= t), default=0.0)


def recovery(result: StreamResult) -> tuple[list[float], list[float]]:
    """(disconnect-to-first-new-final times, seam commit lags) of one stream."""
    firsts, seam = [], []
    for r in result.resumes:
        new = [at for f, at in zip(result.finals, result.final_times, strict=True) if f.seq >= r.next_seq]
        if new:
            firsts.append(min(new) - r.disconnected_at)
        limit = audio_at(result, r.resumed_at) + 5.0
        for f, at in zip(result.finals, result.final_times, strict=True):
            if at > r.disconnected_at:
                seam += [at - result.sent_time(w.end) for w in f.words if w.end <= limit]
    return firsts, seam


async def level(url: str, redis_url: str, audio: list, n: int, kill_at: float) -> dict[str, object]:
    chosen = [audio[i % len(audio)] for i in range(n)]
    opts = StreamOptions()
    base = await LiveStreams(url, chosen, opts).run()
    base_lags = [x for r in base for x in r.commit_lags()]

    async def fault(streams: LiveStreams) -> None:
        await wait_until(lambda: streams.all_have(1), 60, "a final on every stream")
        await asyncio.sleep(max(0.0, kill_at - 3.0))  # the benchmark's fault time, not a wait
        await asyncio.to_thread(kill_replica, owner_of(redis_url, streams.session_id(0)))

    faulted = await LiveStreams(url, chosen, opts).run(fault)
    firsts, seam = [], []
    for r in faulted:
        a, b = recovery(r)
        firsts += a
        seam += b
    return {
        "streams": n,
        "resumed": sum(1 for r in faulted if r.resumes),
        "errors": sum(1 for r in faulted if r.error is not None),
        "first_final_p50_s": percentile(firsts, 50),
        "first_final_p95_s": percentile(firsts, 95),
        "seam_lag_p50_s": percentile(seam, 50),
        "seam_lag_p95_s": percentile(seam, 95),
        "base_lag_p50_s": percentile(base_lags, 50),
        "base_lag_p95_s": percentile(base_lags, 95),
        "downtime_p50_s": percentile([x.downtime_s for r in faulted for x in r.resumes], 50),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--kill-at", type=float, default=20.0)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "failover.json")
    args = parser.parse_args()

    from deployments.local import start_local

    clips = load_manifest(args.manifest, args.limit)
    audio = load_audio([c.path for c in clips])
    rows = []
    with EmbeddedRedis() as redis_server:
        url = start_local(redis_url=redis_server.url)
        for n in args.streams:
            rows.append(asyncio.run(level(url, redis_server.url, audio, n, args.kill_at)))
            print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| streams | resumed | errors | disconnect -> first new final p50 / p95 (s) "
        "| seam commit lag p50 / p95 (s) | no-fault commit lag p50 / p95 (s) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['streams']} | {r['resumed']} | {r['errors']} "
            f"| {r['first_final_p50_s']:.2f} / {r['first_final_p95_s']:.2f} "
            f"| {r['seam_lag_p50_s']:.2f} / {r['seam_lag_p95_s']:.2f} "
            f"| {r['base_lag_p50_s']:.2f} / {r['base_lag_p95_s']:.2f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()} {os.cpu_count()} cpus"
    args.out.write_text(json.dumps({"machine": machine, "kill_at_s": args.kill_at, "levels": rows}, indent=2))


if __name__ == "__main__":
    main()
