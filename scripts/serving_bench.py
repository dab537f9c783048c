"""The serving plane's CPU per stream: Serve's proxy, the ingress replicas, Redis, Serve's
controller and Ray's own processes (issue 6: on a GPU node the model is cheap per stream and
what each stream costs the host is what limits the node).

    python scripts/serving_bench.py [--streams 16 32 64] [--procs 2] [--repeat 1]

The app as the local runner serves it (``ray_config.yaml`` + the local layer, an embedded
redis-server, real WebSockets through Serve's proxy, real sessions, policy and store writes),
with one change: the ASRModel replica runs the cluster tier's stand-in engine
(``tests/cluster/app.py``: sleep, not CPU; one word per second of audio) with a GPU-like batch
time (``--batch-s`` + ``--row-s`` per row, batches as the gpu layer's: up to 128 rows, 20 ms
wait; decodes gathered into calls as the gpu layer's ingress does: ``--gather``), so what the
cores do is the serving plane's work, and the ingress's session and
pending-start limits raised (admission is not what it measures).  Each level plays N real-time streams
of the long-form clips (the load tester, in ``--procs`` processes) and reads every process's
CPU seconds from /proc before and after (Linux), grouped by role.  Prints per level the cores
each role used and each role's CPU milliseconds per second of one stream (a level that
saturates the machine caps its cores: read the per-stream cost below it).  Each run also
prints the stand-in's batch mean and decodes per stream-second (the streams' decode cadence).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the stand-in lives in tests/ (Ray's workers get this path too)

from flood_bench import spread  # noqa: E402  (scripts/: the same median [min-max] cell)
from ray import serve  # noqa: E402

from cluster.redis_server import EmbeddedRedis  # noqa: E402
from cluster.serve_config import load_layer  # noqa: E402
from deployments.local import start_local  # noqa: E402
from ingest.loadtest import LoadReport, load_manifest, run_load  # noqa: E402

# the roles, by command line (Ray names its worker processes after the actor they hold)
ROLES = (
    ("proxy", re.compile(r"ray::ProxyActor")),
    ("ingress", re.compile(r"ray::ServeReplica:\w+:Ingress")),
    ("asr (stand-in)", re.compile(r"ray::ServeReplica:\w+:ASRModel")),
    ("redis", re.compile(r"redis-server")),
    ("controller", re.compile(r"ray::ServeController")),
    (
        "ray (gcs, raylet, agents)",
        re.compile(r"gcs_server|raylet|dashboard|log_monitor|ray::(?!Serve|Proxy)"),
    ),
)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_by_role() -> dict[str, float]:
    """CPU seconds (user + system) of every live process, summed per role."""
    out = {role: 0.0 for role, _ in ROLES}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / TICK
        for role, pattern in ROLES:
            if pattern.search(cmd):
                out[role] += seconds
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--manifest", type=Path, default=ROOT.parent / "shared/evalset/manifest_longform.jsonl"
    )
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--batch-s", type=float, default=0.03, help="stand-in: seconds per batch")
    parser.add_argument("--row-s", type=float, default=0.0005, help="stand-in: seconds per row")
    parser.add_argument(
        "--spin",
        action="store_true",
        help="stand-in: spin the CPU (holding the GIL, as a GPU engine's host work) instead of sleeping",
    )
    parser.add_argument(
        "--decode-in",
        choices=["auto", "thread", "loop"],
        default="auto",
        help="the ASR replica's BatchConfig.decode_in",
    )
    parser.add_argument(
        "--policy", default="{}", help="JSON over the ingress's decode policy (e.g. the cadence)"
    )
    parser.add_argument(
        "--gather",
        type=float,
        default=None,
        help="the ingress's decode_gather_s (default: the gpu layer's; 0: a call per decode)",
    )
    parser.add_argument("--ingress-replicas", type=int, default=None, help="default: ray_config.yaml's")
    parser.add_argument("--port", type=int, default=8017)
    args = parser.parse_args()

    from tests.cluster.app import FakeASR

    clips = load_manifest(args.manifest, args.limit)
    gpu_app = load_layer("gpu")["applications"]["rayscribe"]
    gpu, gpu_gather = gpu_app["deployments"]["ASRModel"], gpu_app["args"]["ingress"]["decode_gather_s"]
    asr = {
        "ray_actor_options": {"num_cpus": 0, "num_gpus": 0},
        "autoscaling_config": None,
        "num_replicas": 1,
        "max_ongoing_requests": gpu["max_ongoing_requests"],
        "user_config": {**gpu["user_config"], "decode_in": args.decode_in},
    }
    overrides = {"ASRModel": asr}
    if args.ingress_replicas:
        overrides["Ingress"] = {"num_replicas": args.ingress_replicas}
    with EmbeddedRedis() as redis, contextlib.ExitStack() as stack:
        stack.callback(serve.shutdown)
        url = start_local(
            port=args.port,
            redis_url=redis.url,
            overrides=overrides,
            # what one replica admits is not measured here: a level's streams start within a
            # second, past the default limits on sessions and connections awaiting their start
            args_override={
                "ingress": {
                    "max_sessions": 512,
                    "limits": {"max_pending": 512},
                    "policy": json.loads(args.policy),
                }
                # the GPU deployment's gathering, as its batching: what the stand-in stands for
                | {"decode_gather_s": gpu_gather if args.gather is None else args.gather}
            },
            model=(FakeASR, (args.batch_s, args.row_s, args.spin)),
        )
        asyncio.run(run_load(url, clips[:1], 1))  # warm-up: first imports and connections
        levels: dict[int, list[tuple[LoadReport, dict[str, float]]]] = {n: [] for n in args.streams}
        replica = serve.get_deployment_handle("ASRModel", app_name="rayscribe")
        for n in args.streams:
            for run in range(args.repeat):
                stats = replica.stats.remote().result()
                decoded, called = stats["decodes"], stats["calls"]
                before, t0 = cpu_by_role(), time.monotonic()
                report, _ = asyncio.run(run_load(url, clips, n, procs=args.procs))
                wall = time.monotonic() - t0
                after = cpu_by_role()
                cores = {role: (after[role] - before[role]) / wall for role in after}
                levels[n].append((report, cores))
                stats = replica.stats.remote().result()
                batches = stats["batches"]  # the replica's last 100
                decodes = stats["decodes"] - decoded
                cadence = decodes / report.audio_s  # decodes per stream-second
                print(
                    f"{n} streams, run {run}: commit p95 {report.commit_p95_s:.2f} s, "
                    f"partial p95 {report.partial_p95_s:.2f} s, sustained {report.sustained}/{n}, "
                    f"errors {report.errors}; "
                    + ", ".join(f"{role} {c:.2f}" for role, c in cores.items())
                    + f" cores; generator {sum(report.generator_cpu):.2f}; "
                    f"batch mean {statistics.mean(batches or [0]):.1f} (last {len(batches)}), "
                    f"{cadence:.2f} decodes per stream-second, "
                    f"{decodes / max(1, stats['calls'] - called):.2f} per call",
                    flush=True,
                )
    print(
        f"\n{platform.machine()}, {os.cpu_count()} cpus; stand-in batch {args.batch_s} s + {args.row_s} s/row"
    )
    roles = [role for role, _ in ROLES]
    print(
        f"{args.repeat} run(s) per level: median [min-max]\n"
        "| streams | sustained | commit p95 (s) | " + " | ".join(f"{r} (cores)" for r in roles) + " |"
    )
    print("|---|---|---|" + "---|" * len(roles))
    for n, runs in levels.items():
        cells = [spread([cores[role] for _, cores in runs]) for role in roles]
        print(
            f"| {n} | {statistics.median(report.sustained for report, _ in runs):g} "
            f"| {spread([report.commit_p95_s for report, _ in runs])} | " + " | ".join(cells) + " |"
        )
    # per stream: the top level's cores can be capped by the machine, so every level's
    for n, runs in levels.items():
        per = {role: statistics.median(cores[role] for _, cores in runs) / n for role in roles}
        print(
            f"{n} streams, CPU ms per stream-second: "
            + ", ".join(f"{role} {ms * 1000:.1f}" for role, ms in per.items())
            + f"; all {sum(per.values()) * 1000:.1f}"
        )


if __name__ == "__main__":
    main()
