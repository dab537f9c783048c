"""Multi-stream load tester: N concurrent streams, latency percentiles, RTF, WER; capacity search.

    rayscribe-loadtest --streams 4 --manifest ../shared/evalset/manifest_longform.jsonl
    rayscribe-loadtest --capacity --repeat 3 --manifest ../shared/evalset/manifest_longform.jsonl

Each stream plays one clip at real-time pace (``--speed`` scales it).  Reported:

- partial latency: arrival of a partial minus when the newest audio it covers was sent;
- commit lag: arrival of a committed word minus when the audio at the word's end was sent;
- RTF: ASR wait time per second of audio, from the server's ``closed`` summary;
- WER of the committed transcript against the reference (Whisper's English normaliser);
- streams sustained: streams that ended without error and whose last final arrived within
  ``--tail-budget`` seconds of their last audio frame;
- generator CPU: CPU seconds per wall second of each load-generator process, so a reader can
  tell the generator was not the bottleneck.

``--capacity`` ramps the number of streams (``--streams`` as the ramp, or 1, 2, 4, 8... up to
``--max-streams``), runs each level ``--repeat`` times and bisects between the largest level that
holds and the smallest that does not.  A level holds when, over its runs, the median commit-lag
p95 is at most ``--max-commit-p95`` and the median number of sustained streams is at least
``--min-sustained`` of the streams.  The report gives every metric as the median over the runs
and its spread (min-max), as a markdown table, a JSON file and a PNG plot.

The generator is cheap enough for hundreds of streams: every clip is read and encoded once
(streams playing the same clip send the same ``bytes`` objects), one timer per process captures
the frames due for every stream at each tick, and ``--procs`` spreads the streams over several
processes.  What each stream sends, and when its audio counts as sent, is exactly what the SDK
(:mod:`ingest.client`) does for a live source.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest.audio import read_wav
from ingest.client import (
    DEFAULT_URL,
    StreamOptions,
    StreamResult,
    _Session,
    encode_frames,
    paced,
)
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
    generator_cpu: tuple[float, ...] = ()  # CPU s / wall s of each generator process


def load_manifest(
    path: Path, limit: int | None = None, max_duration_s: float | None = None, min_duration_s: float = 0.0
) -> list[Clip]:
    clips = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if max_duration_s is not None and row["duration_s"] > max_duration_s:
            continue
        if row["duration_s"] < min_duration_s:
            continue
        clips.append(Clip(path.parent / row["audio"], row["text"], float(row["duration_s"])))
    return clips[:limit] if limit else clips


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def tail_s(result: StreamResult) -> float:
    """Seconds from the last audio frame sent to the end of the stream."""
    return result.finished_at - result.sent[-1][1] if result.sent else float("inf")


def summarize(
    results: list[StreamResult], clips: list[Clip], tail_budget_s: float, generator_cpu: Sequence[float] = ()
) -> LoadReport:
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
        generator_cpu=tuple(generator_cpu),
    )


# -- the load generator ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClipAudio:
    """One clip, read and cut into frames once; every stream playing it shares these objects."""

    samples: np.ndarray  # float32 mono
    rate: int
    step: int  # samples per frame
    chunks: list[np.ndarray]  # views on ``samples``, one per frame
    frames: list[bytes]  # the binary frame each chunk is sent as

    @classmethod
    def read(cls, path: Path, opts: StreamOptions) -> ClipAudio:
        wav = read_wav(path)
        step = max(1, int(opts.chunk_s * wav.sample_rate))
        chunks = [wav.samples[i : i + step] for i in range(0, len(wav.samples), step)]
        frames = encode_frames(wav.samples, wav.sample_rate, opts)
        return cls(wav.samples, wav.sample_rate, step, chunks, frames)


class ClipSession(_Session):
    """An SDK session (same protocol, resume, timestamps) that plays a :class:`ClipAudio`:
    captured by a shared :class:`Pacer` instead of its own timer, and sent as the precomputed
    frames whenever a send is one whole frame (a resend from another offset is encoded as usual)."""

    def __init__(self, url: str, audio: ClipAudio, opts: StreamOptions, pacer: Pacer | None) -> None:
        super().__init__(url, audio.rate, opts, None)
        self.audio, self.pacer = audio, pacer

    async def play(self) -> StreamResult:
        return await self.run(paced(self.audio.samples, self.rate, self.opts))

    async def _capture(self, source: Any) -> None:
        if self.pacer is None or not self.opts.realtime:
            await super()._capture(source)
        else:
            await self.pacer.play(self)

    def _payload(self, start: int, stop: int) -> bytes:
        k, offset = divmod(start, self.audio.step)
        if offset == 0 and k < len(self.audio.frames) and stop == start + len(self.audio.chunks[k]):
            return self.audio.frames[k]
        return super()._payload(start, stop)


@dataclass
class _Player:
    session: ClipSession
    began: float
    interval: float  # wall seconds per frame
    done: asyncio.Future[None]
    next: int = 0  # next frame to capture

    def advance(self, until: float) -> float:
        """Capture every frame due by ``until``; the time the next one is due (inf: finished)."""
        chunks = self.session.audio.chunks
        while self.next < len(chunks) and self.began + self.next * self.interval <= until:
            self.session.take(chunks[self.next])
            self.next += 1
        if self.next < len(chunks):
            return self.began + self.next * self.interval
        if not self.done.done():
            self.session.end_capture()
            self.done.set_result(None)
        return math.inf


class Pacer:
    """One timer for all the streams of a process: each wake captures, for every stream, the
    frames now due (frames due within ``slack_s`` are taken in the same wake), in place of one
    sleeping generator per stream per frame."""

    def __init__(self, slack_s: float = 0.002) -> None:
        self.slack_s = slack_s
        self._players: list[_Player] = []
        self._added = asyncio.Event()

    async def play(self, session: ClipSession) -> None:
        """Capture ``session``'s clip at real-time pace (``speed`` scaled); return at its end."""
        interval = session.audio.step / session.rate / session.opts.speed
        player = _Player(session, time.monotonic(), interval, asyncio.get_running_loop().create_future())
        player.advance(player.began)  # the first frame is captured at once, like ``paced``
        self._players.append(player)
        self._added.set()
        await player.done

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            until = time.monotonic() + self.slack_s
            due = [p.advance(until) for p in self._players]
            self._players = [p for p, d in zip(self._players, due, strict=True) if d < math.inf]
            wake = min(due, default=math.inf)
            if wake == math.inf:
                self._added.clear()
                await self._added.wait()
            else:
                await asyncio.sleep(max(0.0, wake - time.monotonic()))


def stream_options(speed: float) -> StreamOptions:
    return StreamOptions(realtime=speed > 0, speed=speed if speed > 0 else 1.0)


async def play_streams(url: str, paths: Sequence[Path], speed: float) -> tuple[list[StreamResult], float]:
    """Play ``paths`` concurrently (one stream each); the results and this process's CPU use
    while they ran (CPU seconds per wall second)."""
    opts = stream_options(speed)
    audio = {p: ClipAudio.read(p, opts) for p in dict.fromkeys(paths)}  # each clip once
    pacer = Pacer()
    ticker = asyncio.create_task(pacer.run())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        results = await asyncio.gather(*(ClipSession(url, audio[p], opts, pacer).play() for p in paths))
    finally:
        ticker.cancel()
    cpu = (time.process_time() - cpu0) / max(1e-9, time.perf_counter() - wall0)
    return list(results), cpu


def _play_in_process(url: str, paths: list[Path], speed: float) -> tuple[list[StreamResult], float]:
    return asyncio.run(play_streams(url, paths, speed))


async def run_load(
    url: str,
    clips: list[Clip],
    streams: int,
    speed: float = 1.0,
    tail_budget_s: float = 5.0,
    procs: int = 1,
) -> tuple[LoadReport, list[StreamResult]]:
    """``streams`` concurrent streams, stream i playing ``clips[i % len(clips)]``; with
    ``procs`` > 1 stream i is driven by process ``i % procs`` and the results are merged."""
    chosen = [clips[i % len(clips)] for i in range(streams)]
    procs = max(1, min(procs, streams))
    if procs == 1:
        results, cpu = await play_streams(url, [c.path for c in chosen], speed)
        return summarize(results, chosen, tail_budget_s, [cpu]), results
    loop = asyncio.get_running_loop()
    # spawn: the caller may hold Ray or other threads that a fork would copy half-way
    with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
        shares = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _play_in_process, url, [c.path for c in chosen[p::procs]], speed)
                for p in range(procs)
            )
        )
    merged: list[StreamResult] = [StreamResult()] * streams
    for p, (results, _) in enumerate(shares):
        merged[p::procs] = results
    return summarize(merged, chosen, tail_budget_s, [cpu for _, cpu in shares]), merged


# -- capacity search ------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """A metric over repeated runs: the median and the range."""

    median: float
    lo: float
    hi: float


METRICS = (
    "sustained",
    "partial_p50_s",
    "partial_p95_s",
    "commit_p50_s",
    "commit_p95_s",
    "rtf",
    "wer",
    "errors",
    "generator_cpu_max",
)


def aggregate(reports: Sequence[LoadReport]) -> dict[str, Spread]:
    """Median and min-max of every metric over ``reports`` (runs of one level); a run with no
    value for a metric (NaN: no partial, no commit) makes its median and range NaN too."""
    if not reports:
        raise ValueError("no runs to aggregate")
    out = {}
    for name in METRICS:
        if name == "generator_cpu_max":
            values = [max(r.generator_cpu, default=float("nan")) for r in reports]
        else:
            values = [float(getattr(r, name)) for r in reports]
        if any(math.isnan(v) for v in values):
            out[name] = Spread(float("nan"), float("nan"), float("nan"))
        else:
            out[name] = Spread(float(np.median(values)), min(values), max(values))
    return out


@dataclass(frozen=True)
class Bounds:
    max_commit_p95_s: float = 4.0
    min_sustained: float = 1.0  # fraction of the streams


def holds(streams: int, stats: Mapping[str, Spread], bounds: Bounds) -> bool:
    """A level holds when its median commit-lag p95 is within the bound and the median number of
    sustained streams reaches ``min_sustained`` of them (NaN never holds)."""
    return (
        stats["commit_p95_s"].median <= bounds.max_commit_p95_s
        and stats["sustained"].median >= bounds.min_sustained * streams - 1e-9
    )


def geometric_ramp(start: int, growth: float, max_streams: int) -> list[int]:
    """``start``, ``start * growth``, ... up to ``max_streams`` (each level at least one more)."""
    if start < 1 or growth <= 1 or max_streams < start:
        raise ValueError("need 1 <= start <= max_streams and growth > 1")
    ramp = [start]
    while (n := max(ramp[-1] + 1, math.ceil(ramp[-1] * growth))) <= max_streams:
        ramp.append(n)
    return ramp


def capacity(outcomes: Mapping[int, bool]) -> int:
    """The largest level that held below the smallest that did not (0: none held)."""
    failed = min((n for n, ok in outcomes.items() if not ok), default=math.inf)
    return max((n for n, ok in outcomes.items() if ok and n < failed), default=0)


def next_level(outcomes: Mapping[int, bool], ramp: Sequence[int], resolution: int = 1) -> int | None:
    """The level to run next given the levels run so far (streams -> held), or None when the
    search is over.  Up the ramp while every level holds; after the first failure, bisect
    between the capacity and the smallest failing level until they are ``resolution`` apart."""
    failed = min((n for n, ok in outcomes.items() if not ok), default=None)
    if failed is None:
        return next((n for n in ramp if n not in outcomes and n > max(outcomes, default=0)), None)
    good = capacity(outcomes)
    if failed - good <= resolution:
        return None
    middle = (good + failed) // 2
    return middle if middle not in outcomes else None


@dataclass
class Level:
    streams: int
    runs: list[LoadReport]
    stats: dict[str, Spread]
    held: bool


@dataclass
class CapacityReport:
    bounds: Bounds
    levels: list[Level] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return capacity({lv.streams: lv.held for lv in self.levels})

    def sorted_levels(self) -> list[Level]:
        return sorted(self.levels, key=lambda lv: lv.streams)

    def to_json(self, **meta: Any) -> dict[str, Any]:
        return {
            **meta,
            "bounds": asdict(self.bounds),
            "capacity": self.capacity,
            "levels": [
                {
                    "streams": lv.streams,
                    "held": lv.held,
                    "stats": {k: asdict(v) for k, v in lv.stats.items()},
                    "runs": [asdict(r) for r in lv.runs],
                }
                for lv in self.sorted_levels()
            ],
        }


async def search_capacity(
    run_level: Callable[[int], Any],
    ramp: Sequence[int],
    bounds: Bounds,
    repeat: int = 3,
    resolution: int = 1,
    on_run: Callable[[LoadReport], None] | None = None,
) -> CapacityReport:
    """Run levels chosen by :func:`next_level`, each ``repeat`` times; ``run_level(n)`` is an
    awaitable giving one :class:`LoadReport` of ``n`` streams."""
    report = CapacityReport(bounds)
    outcomes: dict[int, bool] = {}
    while (n := next_level(outcomes, ramp, resolution)) is not None:
        runs = []
        for _ in range(repeat):
            runs.append(await run_level(n))
            if on_run:
                on_run(runs[-1])
        stats = aggregate(runs)
        outcomes[n] = holds(n, stats, bounds)
        report.levels.append(Level(n, runs, stats, outcomes[n]))
    return report


def _cell(s: Spread, fmt: str) -> str:
    if math.isnan(s.median):
        return "-"
    if s.lo == s.hi:
        return format(s.median, fmt)
    return f"{s.median:{fmt}} ({s.lo:{fmt}}-{s.hi:{fmt}})"


def markdown_table(report: CapacityReport) -> str:
    """Every metric as ``median (min-max)`` over the runs of its level."""
    head = (
        "| streams | runs | sustained | partial p50 (s) | partial p95 (s) | commit lag p50 (s) "
        "| commit lag p95 (s) | RTF | WER | errors | generator CPU | holds |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for lv in report.sorted_levels():
        s = lv.stats
        lines.append(
            f"| {lv.streams} | {len(lv.runs)} | {_cell(s['sustained'], '.0f')} "
            f"| {_cell(s['partial_p50_s'], '.2f')} | {_cell(s['partial_p95_s'], '.2f')} "
            f"| {_cell(s['commit_p50_s'], '.2f')} | {_cell(s['commit_p95_s'], '.2f')} "
            f"| {_cell(s['rtf'], '.2f')} | {_cell(s['wer'], '.3f')} | {_cell(s['errors'], '.0f')} "
            f"| {_cell(s['generator_cpu_max'], '.2f')} | {'yes' if lv.held else 'no'} |"
        )
    return "\n".join(lines)


def plot(report: CapacityReport, path: Path) -> None:
    """Latency vs streams (median, min-max bars) with the commit-lag bound, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report.sorted_levels()
    x = [lv.streams for lv in levels]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, label in (
        ("partial_p50_s", "partial p50"),
        ("partial_p95_s", "partial p95"),
        ("commit_p50_s", "commit lag p50"),
        ("commit_p95_s", "commit lag p95"),
    ):
        spreads = [lv.stats[name] for lv in levels]
        med = np.array([s.median for s in spreads])
        err = np.array([[s.median - s.lo for s in spreads], [s.hi - s.median for s in spreads]])
        ax.errorbar(x, med, yerr=err, marker="o", capsize=3, label=label)
    ax.axhline(report.bounds.max_commit_p95_s, color="red", linestyle="--", label="commit p95 bound")
    if report.capacity:
        ax.axvline(report.capacity, color="grey", linestyle=":", label=f"capacity {report.capacity}")
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("seconds (median of runs, bars: min-max)")
    ax.set_title("rayscribe: latency vs streams")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


@dataclass(frozen=True)
class CapacityArgs:
    url: str
    clips: list[Clip]
    ramp: list[int]
    bounds: Bounds
    repeat: int = 3
    resolution: int = 1
    speed: float = 1.0
    tail_budget_s: float = 5.0
    procs: int = 1
    out: Path = Path("bench-results")


def run_capacity(args: CapacityArgs, **meta: Any) -> CapacityReport:
    """The capacity search against ``args.url``; writes capacity.{json,md,png} under ``args.out``."""

    async def level(n: int) -> LoadReport:
        report, _ = await run_load(args.url, args.clips, n, args.speed, args.tail_budget_s, args.procs)
        return report

    def show(r: LoadReport) -> None:
        print(json.dumps(asdict(r)), flush=True)

    report = asyncio.run(
        search_capacity(level, args.ramp, args.bounds, args.repeat, args.resolution, on_run=show)
    )
    table = markdown_table(report)
    at_least = "" if any(not lv.held for lv in report.levels) else ">= "  # nothing failed: a floor
    summary = (
        f"capacity: {at_least}{report.capacity} streams (commit lag p95 <= {args.bounds.max_commit_p95_s} s, "
        f">= {args.bounds.min_sustained:.0%} sustained; median of {args.repeat} runs per level)"
    )
    print(f"\n{table}\n\n{summary}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    info = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "url": args.url,
        "speed": args.speed,
        "repeat": args.repeat,
        "procs": args.procs,
        "clips": [c.path.name for c in args.clips],
        **meta,
    }
    (args.out / "capacity.json").write_text(json.dumps(report.to_json(**info), indent=2))
    (args.out / "capacity.md").write_text(f"{table}\n\n{summary}\n")
    plot(report, args.out / "capacity.png")
    return report


def add_capacity_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("capacity search")
    g.add_argument("--max-commit-p95", type=float, default=4.0, help="bound on commit lag p95 (s)")
    g.add_argument("--min-sustained", type=float, default=1.0, help="fraction of streams sustained")
    g.add_argument("--repeat", type=int, default=3, help="runs per level (median and spread)")
    g.add_argument("--start", type=int, default=1, help="first level of the geometric ramp")
    g.add_argument("--growth", type=float, default=2.0, help="ramp factor")
    g.add_argument("--max-streams", type=int, default=256)
    g.add_argument("--resolution", type=int, default=1, help="stop bisecting this close (streams)")
    g.add_argument("--out", type=Path, default=Path("bench-results"), help="capacity.{json,md,png} go here")


def capacity_args(ns: argparse.Namespace, url: str, clips: list[Clip]) -> CapacityArgs:
    ramp = sorted(ns.streams) if ns.streams else geometric_ramp(ns.start, ns.growth, ns.max_streams)
    return CapacityArgs(
        url=url,
        clips=clips,
        ramp=ramp,
        bounds=Bounds(ns.max_commit_p95, ns.min_sustained),
        repeat=ns.repeat,
        resolution=ns.resolution,
        speed=ns.speed,
        tail_budget_s=ns.tail_budget,
        procs=ns.procs,
        out=ns.out,
    )


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--api-key", default=None, help="API key (default: $RAYSCRIBE_API_KEY)")
    parser.add_argument(
        "--streams",
        type=int,
        nargs="+",
        default=None,
        help="levels (default 1 2 4 8; with --capacity: the ramp)",
    )
    parser.add_argument("--speed", type=float, default=1.0, help="1 = real time; 0 = unpaced")
    parser.add_argument("--limit", type=int, default=None, help="use the first N clips")
    parser.add_argument("--tail-budget", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=1, help="generator processes sharing the streams")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rayscribe-loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", type=Path, required=True)
    add_load_arguments(parser)
    parser.add_argument("--capacity", action="store_true", help="search the largest N that holds")
    add_capacity_arguments(parser)
    args = parser.parse_args(argv)
    if args.api_key:  # every StreamOptions (and --procs children) read it from the env
        os.environ["RAYSCRIBE_API_KEY"] = args.api_key
    clips = load_manifest(args.manifest, args.limit)
    if args.capacity:
        run_capacity(capacity_args(args, args.url, clips))
        return 0
    for n in args.streams or [1, 2, 4, 8]:
        report, _ = asyncio.run(run_load(args.url, clips, n, args.speed, args.tail_budget, args.procs))
        print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
