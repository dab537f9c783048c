"""Benchmark: 1, 2, 4, 8 concurrent real-time streams against the local app.

    python scripts/benchmark.py [--streams 1 2 4 8] [--manifest PATH] [--speed 1.0]

Prints a markdown table and writes bench-results/benchmark.json.  Offline WER is measured
first, in-process, on the same clips (sequential 20 s windows, see deployments.offline), and
reported per level over exactly the clips that level streamed.
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

from ingest.loadtest import Clip, load_manifest, run_load
from ingest.wer import wer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = ROOT.parent / "shared" / "evalset" / "manifest_longform.jsonl"


def offline_transcripts(clips: list[Clip]) -> tuple[dict[Path, str], float]:
    """Offline transcript of every clip (in-process engine) and the offline RTF."""
    from deployments.offline import transcribe_long
    from deployments.whisper.engine import WhisperEngine
    from ingest.audio import read_wav

    engine = WhisperEngine()
    texts, started = {}, time.perf_counter()
    for clip in clips:
        words = transcribe_long(engine.transcribe, read_wav(clip.path).samples)
        texts[clip.path] = "".join(w.text for w in words)
    return texts, (time.perf_counter() - started) / sum(c.duration_s for c in clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "benchmark.json")
    args = parser.parse_args()

    clips = load_manifest(args.manifest, args.limit)
    offline, off_rtf = offline_transcripts(clips)
    all_wer = wer([c.reference for c in clips], [offline[c.path] for c in clips])
    print(f"offline: WER {all_wer:.3f}, RTF {off_rtf:.3f} on {len(clips)} clips", flush=True)

    from deployments.local import start_local

    url = start_local()
    rows = []
    for n in args.streams:
        report, _ = asyncio.run(run_load(url, clips, n, args.speed))
        chosen = [clips[i % len(clips)] for i in range(n)]  # the clips run_load streamed
        offline_wer = wer([c.reference for c in chosen], [offline[c.path] for c in chosen])
        rows.append({**asdict(report), "offline_wer": offline_wer})
        print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| streams | sustained | partial p50 / p95 (s) | commit lag p50 / p95 (s) | RTF | WER (offline) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['streams']} | {r['sustained']} | {r['partial_p50_s']:.2f} / {r['partial_p95_s']:.2f} "
            f"| {r['commit_p50_s']:.2f} / {r['commit_p95_s']:.2f} | {r['rtf']:.2f} "
            f"| {r['wer']:.3f} ({r['offline_wer']:.3f}) |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "speed": args.speed,
        "clips": [c.path.name for c in clips],
        "offline_rtf": off_rtf,
        "levels": rows,
    }
    args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
