"""Benchmark: 1, 2, 4, 8 concurrent real-time streams against the local app.

    python scripts/benchmark.py [--streams 1 2 4 8] [--manifest PATH] [--speed 1.0]

Prints a markdown table and writes bench-results/benchmark.json.  Offline WER is measured
first, in-process, on the same clips (sequential 30 s windows, see deployments.offline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = ROOT.parent / "shared" / "evalset" / "manifest_longform.jsonl"


def offline_wer(clips: list, engine_threads: int) -> tuple[float, float]:
    from deployments.config import EngineConfig
    from deployments.offline import transcribe_long
    from deployments.whisper.engine import WhisperEngine
    from ingest.audio import read_wav
    from ingest.wer import wer

    engine = WhisperEngine(EngineConfig(num_threads=engine_threads))
    hyps, started = [], time.perf_counter()
    for clip in clips:
        words = transcribe_long(engine.transcribe, read_wav(clip.path).samples)
        hyps.append("".join(w.text for w in words))
    rtf = (time.perf_counter() - started) / sum(c.duration_s for c in clips)
    return wer([c.reference for c in clips], hyps), rtf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "benchmark.json")
    args = parser.parse_args()

    from ingest.loadtest import load_manifest, run_load

    clips = load_manifest(args.manifest, args.limit)
    off_wer, off_rtf = offline_wer(clips, engine_threads=os.cpu_count() or 2)
    print(f"offline: WER {off_wer:.3f}, RTF {off_rtf:.3f} on {len(clips)} clips", flush=True)

    from deployments.local import start_local

    url = start_local()
    rows = []
    for n in args.streams:
        report, _ = asyncio.run(run_load(url, clips, n, args.speed))
        rows.append(asdict(report))
        print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| streams | sustained | partial p50 / p95 (s) | commit lag p50 / p95 (s) | RTF | WER (offline) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['streams']} | {r['sustained']} | {r['partial_p50_s']:.2f} / {r['partial_p95_s']:.2f} "
            f"| {r['commit_p50_s']:.2f} / {r['commit_p95_s']:.2f} | {r['rtf']:.2f} "
            f"| {r['wer']:.3f} ({off_wer:.3f}) |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                "speed": args.speed,
                "clips": [str(c.path.name) for c in clips],
                "offline_wer": off_wer,
                "offline_rtf": off_rtf,
                "levels": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
