"""A well-behaved stream's latency under floods, and the ingress's memory per idle and per
slow session (issue 8), against the local app (``ray_config.yaml`` + the local layer, embedded
Redis).

    python scripts/flood_bench.py [--repeat 3] [--sockets 64] [--flooders 4] [--sessions 16]
                                  [--floods none sockets audio]

Latency: one real-time stream of the first long-form clip, ``--repeat`` times per condition:
``none``; ``sockets`` (``--sockets`` connections opened at once that never send ``start``,
reopened when the server times them out; refused ones stay away); ``audio`` (``--flooders``
clients pushing audio as fast as the server reads it, reconnecting when cut).  Each flood runs
in its own process, started 3 s after the measured stream.  Memory: the ingress replicas' RSS
(summed) with no session, then with ``--sessions`` idle sessions (started, keepalives only)
and with ``--sessions`` slow ones (started, real-time audio, never reading).  Prints
markdown; writes bench-results/flood.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ingest.audio import read_wav
from ingest.loadtest import Clip, LoadReport, load_manifest, run_load

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT.parent / "shared" / "evalset" / "manifest_longform.jsonl"
START = json.dumps({"type": "start", "sample_rate": 16000})
KEEPALIVE = json.dumps({"type": "keepalive"})


class Flood:
    """Background clients; ``closes`` counts how the server ended their connections."""

    def __init__(self) -> None:
        self.closes: Counter[str] = Counter()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, n: int, client: Any) -> None:
        self.tasks += [asyncio.create_task(client(self)) for _ in range(n)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    def ended(self, ws: ClientConnection) -> None:
        self.closes[str(ws.close_code)] += 1


async def idle_socket(flood: Flood, url: str) -> None:
    """Connect, never start, hold the socket; reconnect when the server times it out (to take
    the pending slot again).  A refused socket (1013: the pending slots are full) stays away:
    the flood is many idle sockets opened at once, not a connection-rate attack (that is for
    a load balancer in front of the service to cap, docs/security.md)."""
    while True:
        try:
            async with connect(url) as ws:
                with contextlib.suppress(ConnectionClosed):
                    await ws.recv()  # a refusal's error message, or nothing until the timeout
                    await ws.wait_closed()
                flood.ended(ws)
                if ws.close_code != 4408:
                    return
        except (OSError, InvalidHandshake):
            flood.closes["refused at handshake"] += 1
            return


async def audio_flooder(flood: Flood, url: str) -> None:
    """Start, then send 256 KiB frames as fast as the socket takes them."""
    frame = np.zeros(128 * 1024, np.int16).tobytes()
    while True:
        try:
            async with connect(url, max_size=2**24) as ws:
                await ws.send(START)
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await ws.send(frame)
                flood.ended(ws)
        except (OSError, InvalidHandshake):
            flood.closes["refused at handshake"] += 1
        await asyncio.sleep(0.1)


def _flood_process(kind: str, n: int, url: str, stop: Any, results: Any) -> None:
    """The flood, in its own process and event loop: it must not delay the measured client's
    loop (which timestamps every message) nor share its CPU accounting."""

    async def run() -> dict[str, int]:
        flood = Flood()
        client = idle_socket if kind == "sockets" else audio_flooder
        flood.start(n, lambda f: client(f, url))
        await asyncio.to_thread(stop.wait)
        await flood.stop()
        return dict(flood.closes)

    wall, cpu = time.monotonic(), time.process_time()
    closes = asyncio.run(run())
    results.put((closes, (time.process_time() - cpu) / (time.monotonic() - wall)))


async def measured_stream(
    url: str, clip: Clip, kind: str, n: int
) -> tuple[LoadReport, dict[str, int], float]:
    """The stream is admitted first, then the flood starts: what the issue asks is that
    accepted streams keep their latency (a client connecting while the flood holds every
    pending slot is refused with 1013, try again later, like the flood's own sockets).
    Returns the stream's report, how the flood's connections ended, the flood's CPU share."""
    measured = asyncio.create_task(run_load(url, [clip], 1))
    if kind == "none":
        report, _ = await measured
        return report, {}, 0.0
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    await asyncio.sleep(3.0)
    proc = ctx.Process(target=_flood_process, args=(kind, n, url, stop, results))
    proc.start()
    try:
        report, _ = await measured
    finally:
        stop.set()
    closes, cpu = await asyncio.to_thread(results.get, True, 60)
    await asyncio.to_thread(proc.join)
    return report, closes, cpu


def ingress_rss_mb() -> float:
    from cluster.faults import replica_pids

    total = 0
    for pid in replica_pids("Ingress").values():
        with open(f"/proc/{pid}/statm") as f:
            total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return total / 2**20


async def hold_sessions(url: str, n: int, speech: bytes | None, seconds: float) -> float:
    """Ingress RSS (MiB) after ``seconds`` with ``n`` started sessions: idle (keepalives) or,
    given ``speech`` (16 kHz s16le), slow: real-time speech, never reading what the server
    sends (the client library stops reading its socket after 16 queued messages)."""
    async with contextlib.AsyncExitStack() as stack:
        socks = [await stack.enter_async_context(connect(url)) for _ in range(n)]
        for ws in socks:
            await ws.send(START)
        began, pos, frame = time.monotonic(), 0, 3200  # 100 ms of s16le
        while time.monotonic() - began < seconds:
            chunk = speech[pos : pos + frame] if speech else b""
            pos = (pos + frame) % max(1, len(speech or b"") - frame)
            for ws in socks:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(chunk if speech else KEEPALIVE)
            await asyncio.sleep(0.1)  # the senders' real-time pace
        return ingress_rss_mb()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=64)
    parser.add_argument("--flooders", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--hold-s", type=float, default=20.0)
    parser.add_argument("--floods", nargs="+", default=["none", "sockets", "audio"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "flood.json")
    args = parser.parse_args()

    from cluster.redis_server import EmbeddedRedis
    from deployments.local import start_local

    clip = load_manifest(MANIFEST, 1)[0]
    with EmbeddedRedis() as redis:
        url = start_local(redis_url=redis.url)
        asyncio.run(run_load(url, [clip], 1))  # warm-up: model loaded, first decodes compiled
        rows: dict[str, Any] = {}
        sizes = {"none": 0, "sockets": args.sockets, "audio": args.flooders}
        for kind, n in ((k, sizes[k]) for k in args.floods):
            runs = [asyncio.run(measured_stream(url, clip, kind, n)) for _ in range(args.repeat)]
            reports = [r for r, _, _ in runs]
            closes: Counter[str] = Counter()
            for _, c, _ in runs:
                closes.update(c)
            rows[kind] = {
                "n": n,
                "partial_p50_s": [r.partial_p50_s for r in reports],
                "partial_p95_s": [r.partial_p95_s for r in reports],
                "commit_p95_s": [r.commit_p95_s for r in reports],
                "wer": [r.wer for r in reports],
                "errors": [r.errors for r in reports],
                "flood_closes": dict(closes),
                "flood_cpu": [cpu for _, _, cpu in runs],  # CPU seconds per second, on this machine
            }
            print(f"{kind}: {rows[kind]}", flush=True)
        base = ingress_rss_mb()
        speech = (read_wav(clip.path).samples * 32767).astype(np.int16).tobytes()
        idle = asyncio.run(hold_sessions(url, args.sessions, None, args.hold_s))
        slow = asyncio.run(hold_sessions(url, args.sessions, speech, args.hold_s))
    memory = {
        "sessions": args.sessions,
        "base_mb": base,
        "idle_mb": idle,
        "slow_mb": slow,
        "per_idle_kib": (idle - base) * 1024 / args.sessions,
        "per_slow_kib": (slow - base) * 1024 / args.sessions,
    }
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"\nmachine: {machine}; clip {clip.path.name} ({clip.duration_s:.0f} s)")
    head = "| flood | clients | partial p50 (s) | partial p95 (s) | commit p95 (s) | WER | flood CPU |"
    print(head + " flood closes |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, row in rows.items():
        closes = ", ".join(f"{k}: {v}" for k, v in sorted(row["flood_closes"].items())) or "-"
        print(
            f"| {kind} | {row['n']} | {spread(row['partial_p50_s'])} | {spread(row['partial_p95_s'])} "
            f"| {spread(row['commit_p95_s'])} | {statistics.median(row['wer']):.3f} "
            f"| {statistics.median(row['flood_cpu']):.2f} | {closes} |"
        )
    print(
        f"\ningress RSS (both replicas): {base:.0f} MiB with no session, {idle:.0f} MiB with "
        f"{args.sessions} idle ({memory['per_idle_kib']:.0f} KiB each), {slow:.0f} MiB with "
        f"{args.sessions} slow ({memory['per_slow_kib']:.0f} KiB each)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"latency": rows, "memory": memory, "clip": str(clip.path)}, indent=2))


if __name__ == "__main__":
    main()
