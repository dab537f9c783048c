"""Capacity: the largest number of concurrent real-time streams the service sustains.

    python scripts/capacity.py [--url ws://HOST:PORT/v1/stream] [--quick] [--repeat 3]
                               [--streams 1 2 4 8 | --start 1 --growth 2 --max-streams 256]
                               [--max-commit-p95 4.0] [--procs 2] [--out bench-results]

Ramps the number of streams until the median commit-lag p95 passes ``--max-commit-p95`` or
streams stop being sustained, bisects to the largest N that holds, and writes
capacity.{md,json,png} under ``--out``: every metric as the median of ``--repeat`` runs with its
spread (min-max), and the load generator's own CPU use.  Without ``--url`` it starts the local
app from ray_config.yaml (like scripts/benchmark.py).  ``--quick``: 8-12 s clips, levels 1 2 4
and bisection, a few minutes on the dev machine.  The long-form clips of the README benchmark
are the default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ingest.loadtest import (
    add_capacity_arguments,
    add_load_arguments,
    capacity_args,
    load_manifest,
    run_capacity,
)

ROOT = Path(__file__).resolve().parent.parent
EVALSET = ROOT.parent / "shared" / "evalset"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, default=None, help="default: the long-form evalset clips")
    parser.add_argument("--quick", action="store_true", help="short clips, levels 1 2 4 (+ bisection)")
    add_load_arguments(parser)
    add_capacity_arguments(parser)
    parser.set_defaults(url=None, out=ROOT / "bench-results")
    args = parser.parse_args(argv)
    if args.quick:
        manifest = args.manifest or EVALSET / "manifest.jsonl"
        clips = load_manifest(manifest, args.limit or 4, max_duration_s=12.0, min_duration_s=8.0)
        args.streams = args.streams or [1, 2, 4]
    else:
        manifest = args.manifest or EVALSET / "manifest_longform.jsonl"
        clips = load_manifest(manifest, args.limit or 4)
    if not clips:
        parser.error(f"no clips in {manifest}")
    url = args.url
    if url is None:
        from deployments.local import start_local

        url = start_local()
    run_capacity(capacity_args(args, url, clips), manifest=str(manifest), quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
