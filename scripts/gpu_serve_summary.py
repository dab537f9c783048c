"""The table of a ``scripts/gpu_serve.sh`` run: per level, the load tester's figures (median
[min-max] of its runs), and from the snapshots around the level the ASR replicas' batches
(requests decoded / batches run) and decodes per call from the ingress (gathered within
``ingress.decode_gather_s``), queue wait and batch time (p50 / p95 as the Prometheus
histogram's bucket bounds: Ray exports a histogram's ``_sum`` from its buckets, not exactly,
so no means from it), each role's CPU (``ps`` times) and the GPU's utilisation (``nvidia-smi
dmon``).

    python scripts/gpu_serve_summary.py OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# roles by command line; the first that matches counts a process
ROLES = (
    ("ingress", "ServeReplica:rayscribe:Ingress"),
    ("asr", "ServeReplica:rayscribe:ASRModel"),
    ("proxy", "ProxyActor"),
    ("ray", "raylet|gcs_server|DashboardAgent|dashboard|ray/_private|ServeController|ray::IDLE"),
    ("redis", "redis-server"),
)
SAMPLE = re.compile(r"^ray_rayscribe_(\w+?)_(count|total|bucket)\{(.*)\} ([0-9.e+-]+)$")
LE = re.compile(r'le="([^"]+)"')


@dataclass
class Snapshot:
    label: str
    at: float
    sums: dict[str, float]  # "<series>_count", "<series>_total", "<series>_bucket|<le>": all replicas
    cpu: dict[str, float]  # role -> CPU seconds of its processes


def role_of(args: str) -> str | None:
    return next((role for role, pattern in ROLES if re.search(pattern, args)), None)


def read_snapshots(path: Path) -> list[Snapshot]:
    out: list[Snapshot] = []
    for block in re.split(r"^=== ", path.read_text(), flags=re.M)[1:]:
        head, rest = block.split("\n", 1)
        series, ps = rest.split("--- ps\n", 1)
        label, at = head.rsplit(" ", 1)
        sums: dict[str, float] = defaultdict(float)
        for line in series.splitlines():
            m = SAMPLE.match(line)
            if m:
                le = LE.search(m.group(3)) if m.group(2) == "bucket" else None
                sums[f"{m.group(1)}_{m.group(2)}" + (f"|{le.group(1)}" if le else "")] += float(m.group(4))
        cpu: dict[str, float] = defaultdict(float)
        for line in ps.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1].isdigit() and (role := role_of(parts[2])):
                cpu[role] += int(parts[1])
        out.append(Snapshot(label, float(at), dict(sums), dict(cpu)))
    return out


def gpu_util(path: Path) -> dict[int, list[int]]:
    """SM % per ``dmon`` sample, by level (the script marks each level's samples with
    ``=== N``; a file without marks is one level, 0)."""
    levels: dict[int, list[int]] = defaultdict(list)
    level = 0
    for line in path.read_text().splitlines() if path.exists() else []:
        cols = line.split()
        if cols[:1] == ["==="]:
            level = int(cols[1])
        elif len(cols) > 1 and cols[0].isdigit() and cols[1].isdigit():
            levels[level].append(int(cols[1]))
    return levels


def loaded(samples: list[int]) -> list[int]:
    """The samples from the first to the last non-zero one: the GPU's busy span."""
    busy = [i for i, u in enumerate(samples) if u]
    return samples[busy[0] : busy[-1] + 1] if busy else []


def quantile(d: dict[str, float], series: str, q: float) -> str:
    """The bucket bound below which ``q`` of the level's observations fell."""
    prefix = f"{series}_bucket|"
    buckets = sorted((float(k[len(prefix) :]), v) for k, v in d.items() if k.startswith(prefix))
    total = d.get(f"{series}_count", 0.0)
    bound = next((le for le, v in buckets if total and v >= q * total), None)
    return "-" if bound is None else f"{bound:g}"


def spread(values: list[float], fmt: str = ".2f") -> str:
    med = statistics.median(values)
    one = f"{med:{fmt}}"
    return one if len(values) == 1 else f"{one} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    snaps = read_snapshots(out / "metrics.txt")
    util = gpu_util(out / "dmon.txt")
    print(
        "| streams | runs | sustained | partial p95 (s) | commit p50 / p95 (s) | WER | batch mean | "
        "decodes per call | "
        "queue wait p50 / p95 (s) | batch time p50 / p95 (s) | GPU SM % median | "
        + " | ".join(r for r, _ in ROLES)
        + " (cores) | load generator (cores) |"
    )
    print("|---" * (12 + len(ROLES)) + "|")
    for before, after in zip(snaps[::2], snaps[1::2], strict=False):
        n = int(before.label.split()[-1])
        runs = json.loads((out / f"capacity_{n}.json").read_text())["levels"][0]["runs"]
        wall = after.at - before.at
        d = {k: after.sums.get(k, 0.0) - before.sums.get(k, 0.0) for k in after.sums}
        batch = d.get("decodes_total", 0.0) / max(1.0, d.get("batch_size_count", 0.0))
        calls = d.get("decode_calls_total", 0.0)  # (a run before the counter existed: "-")
        per_call = f"{d.get('decodes_total', 0.0) / calls:.1f}" if calls else "-"
        waits = [
            f"{quantile(d, s, 0.5)} / {quantile(d, s, 0.95)}"
            for s in ("queue_wait_seconds", "decode_seconds")
        ]
        cores = [(after.cpu.get(r, 0.0) - before.cpu.get(r, 0.0)) / wall for r, _ in ROLES]
        samples = loaded(util.get(n, util.get(0, [])) if len(snaps) == 2 else util.get(n, []))
        sm = statistics.median(samples) if samples else float("nan")
        print(
            f"| {n} | {len(runs)} | {spread([r['sustained'] for r in runs], 'g')} "
            f"| {spread([r['partial_p95_s'] for r in runs])} "
            f"| {spread([r['commit_p50_s'] for r in runs])} / {spread([r['commit_p95_s'] for r in runs])} "
            f"| {spread([r['wer'] for r in runs], '.3f')} | {batch:.1f} | {per_call} "
            f"| {waits[0]} | {waits[1]} "
            f"| {sm:.0f} | "
            + " | ".join(f"{c:.2f}" for c in cores)
            # the generator's processes live only during a run: its own CPU, as it reports it
            + f" | {spread([sum(r['generator_cpu']) for r in runs])} |"
        )


if __name__ == "__main__":
    main()
