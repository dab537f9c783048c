"""What one decode request costs the serving plane, outside the model: the caller (an ingress
replica's side: the window's copy, Serve's router, Ray's submit through the object store) and
the ASR replica (Serve's request handling, batching, the answer).  On a GPU node that
replica's one core is what the round trip waits on (README, GPU sixth pass), so its
milliseconds per request bound the streams a GPU serves.

    python scripts/request_cost.py [--rounds 3] [--rate 100] [--seconds 10]

A real Serve ASR deployment with the cluster tier's stand-in engine at zero cost (no model:
what is left is the serving plane), one replica, batches as the gpu layer's; the caller is
this process, sending ``--rate`` requests per second through a deployment handle, each with a
new window as ``LocalAgreement.request`` makes it (a copy of the buffer).  Variants, alternated
round by round, each a fresh deployment: 20 s windows as float32 (what the ingress sends) or
int16 (half the bytes: a lever tried in stop 28), Serve's per-request access log on or off,
and 1 s windows (what the bytes cost).  CPU before and after each run (this process's own, the
replica's from /proc: Linux): the caller's and the replica's milliseconds per request, and
the round trip p50 / p95.  Prints median [min-max] over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the stand-in lives in tests/ (Ray's workers get this path too)

import ray  # noqa: E402
from flood_bench import spread  # noqa: E402  (scripts/: the same median [min-max] cell)
from ray import serve  # noqa: E402
from serving_bench import cpu_by_role  # noqa: E402  (scripts/: the same /proc reader, by role)

from cluster.serve_config import load_layer  # noqa: E402
from deployments.transcript import DecodeRequest  # noqa: E402

WINDOW_S = 20.0  # the CPU policy's max_buffer_s: a stream's usual window
ASR_ROLE = "asr (stand-in)"  # serving_bench's role of the ASRModel replica processes


@dataclass(frozen=True)
class Variant:
    name: str
    int16: bool
    access_log: bool
    window_s: float = WINDOW_S


VARIANTS = (
    Variant("20 s float32 window, access log on (shipped)", False, True),
    Variant("20 s int16 window, access log on", True, True),
    Variant("20 s float32 window, access log off", False, False),
    Variant("20 s int16 window, access log off", True, False),
    Variant("1 s float32 window, access log on", False, True, 1.0),
)


def deploy(variant: Variant) -> serve.handle.DeploymentHandle:
    from tests.cluster.app import FakeASR

    gpu = load_layer("gpu")["applications"]["rayscribe"]["deployments"]["ASRModel"]
    app = FakeASR.options(
        name="ASRModel",
        num_replicas=1,
        max_ongoing_requests=gpu["max_ongoing_requests"],
        ray_actor_options={"num_cpus": 0},
        user_config=gpu["user_config"],
        logging_config={"enable_access_log": variant.access_log},
    ).bind(0.0, 0.0)
    handle: serve.handle.DeploymentHandle = serve.run(app, name="cost", route_prefix=None)
    return handle


async def load(
    handle: serve.handle.DeploymentHandle, variant: Variant, rate: float, seconds: float
) -> list[float]:
    """``rate`` requests a second for ``seconds``; each one's round trip."""
    rng = np.random.default_rng(0)
    buffer = (rng.integers(-8000, 8000, int(WINDOW_S * 16000) + 16000) / 32768).astype(np.float32)
    n = int(variant.window_s * 16000)
    trips: list[float] = []

    async def one(i: int) -> None:
        # as decode_pcm's floats scale back (the stand-in reads only the length)
        window = (buffer[:n] * 32768).astype(np.int16) if variant.int16 else buffer[:n].copy()
        started = time.perf_counter()
        await handle.transcribe.remote(DecodeRequest(window, offset=float(i)))
        trips.append(time.perf_counter() - started)

    tasks, t0 = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))  # pacing, as streams are
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return trips


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per run")
    args = parser.parse_args()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR)
    rows: dict[str, list[tuple[float, float, float, float]]] = {v.name: [] for v in VARIANTS}
    try:
        for rnd in range(args.rounds):
            for variant in VARIANTS:
                handle = deploy(variant)
                asyncio.run(load(handle, variant, args.rate, 1.0))  # warm-up: imports, connections
                me0, rep0 = time.process_time(), cpu_by_role()[ASR_ROLE]
                trips = asyncio.run(load(handle, variant, args.rate, args.seconds))
                me, rep = time.process_time() - me0, cpu_by_role()[ASR_ROLE] - rep0
                n = len(trips)
                q = statistics.quantiles(trips, n=20)
                row = (1e3 * me / n, 1e3 * rep / n, 1e3 * statistics.median(trips), 1e3 * q[18])
                rows[variant.name].append(row)
                print(
                    f"round {rnd}, {variant.name}: caller {row[0]:.2f} ms, "
                    f"replica {row[1]:.2f} ms per request; "
                    f"round trip p50 {row[2]:.1f} / p95 {row[3]:.1f} ms ({n} requests)",
                    flush=True,
                )
                serve.delete("cost")
    finally:
        serve.shutdown()
        ray.shutdown()
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cpus; {args.rate:g} requests/s for {args.seconds:g} s, "
        f"{WINDOW_S:g} s windows; {args.rounds} rounds: median [min-max]\n"
    )
    print("| variant | caller (ms / request) | ASR replica (ms / request) | round trip p50 (ms) | p95 (ms) |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        cells = [spread([r[k] for r in runs]) for k in range(4)]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
