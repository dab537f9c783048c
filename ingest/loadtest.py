"""Multi-stream load tester: N concurrent streams, latency percentiles, RTF, WER.

    rayscribe-loadtest --streams 4 --manifest ../shared/evalset/manifest_longform.jsonl

Each stream plays one clip at real-time pace (``--speed`` scales it).  Reported:

- partial latency: arrival of a partial minus when the newest audio it covers was sent;
- commit lag: arrival of a committed word minus when the audio at the word's end was sent;
- RTF: ASR wait time per second of audio, from the server's ``closed`` summary;
- WER of the committed transcript against the reference;
- streams sustained: streams that ended without error and whose last final arrived within
  ``--tail-budget`` seconds of their last audio frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ingest.client import DEFAULT_URL, StreamOptions, StreamResult, stream_file
from ingest.wer import wer


@dataclass(frozen=True)
class Clip:
    path: Path
    reference: str
    duration_s: float


@dataclass(frozen=True)
class LoadReport:
    streams: int
    sustained: int
    partial_p50_s: float
    partial_p95_s: float
    commit_p50_s: float
    commit_p95_s: float
    rtf: float
    wer: float
    audio_s: float
    errors: int


def load_manifest(path: Path, limit: int | None = None, max_duration_s: float | None = None) -> list[Clip]:
    clips = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if max_duration_s is not None and row["duration_s"] > max_duration_s:
            continue
        clips.append(Clip(path.parent / row["audio"], row["text"], float(row["duration_s"])))
    return clips[:limit] if limit else clips


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def tail_s(result: StreamResult) -> float:
    """Seconds from the last audio frame sent to the end of the stream."""
    return result.finished_at - result.sent[-1][1] if result.sent else float("inf")


def summarize(results: list[StreamResult], clips: list[Clip], tail_budget_s: float) -> LoadReport:
    partial = [x for r in results for x in r.partial_latencies()]
    commit = [x for r in results for x in r.commit_lags()]
    audio = sum(c.duration_s for c in clips)
    decode = sum(r.summary.decode_seconds for r in results if r.summary)
    ok = [r for r in results if r.error is None and r.summary is not None]
    return LoadReport(
        streams=len(results),
        sustained=sum(1 for r in ok if tail_s(r) <= tail_budget_s),
        partial_p50_s=percentile(partial, 50),
        partial_p95_s=percentile(partial, 95),
        commit_p50_s=percentile(commit, 50),
        commit_p95_s=percentile(commit, 95),
        rtf=decode / audio if audio else float("nan"),
        wer=wer([c.reference for c in clips], [r.text for r in results]),
        audio_s=audio,
        errors=len(results) - len(ok),
    )


async def run_load(
    url: str, clips: list[Clip], streams: int, speed: float = 1.0, tail_budget_s: float = 5.0
) -> tuple[LoadReport, list[StreamResult]]:
    chosen = [clips[i % len(clips)] for i in range(streams)]
    options = StreamOptions(realtime=speed > 0, speed=speed if speed > 0 else 1.0)
    results = await asyncio.gather(*(stream_file(url, c.path, options) for c in chosen))
    return summarize(list(results), chosen, tail_budget_s), list(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rayscribe-loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--speed", type=float, default=1.0, help="1 = real time; 0 = unpaced")
    parser.add_argument("--limit", type=int, default=None, help="use the first N clips")
    parser.add_argument("--tail-budget", type=float, default=5.0)
    args = parser.parse_args(argv)
    clips = load_manifest(args.manifest, args.limit)
    for n in args.streams:
        report, _ = asyncio.run(run_load(args.url, clips, n, args.speed, args.tail_budget))
        print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
