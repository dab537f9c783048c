"""The load generator and the capacity search, without Ray or the model.

The search, the aggregation over repeats, the table and the plot are pure functions fed with
fake level reports; the generator plays real clips over real WebSockets to a fake server
(``tests/unit/fake_server.py``) that records nothing but answers like the service paces.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection

from ingest.audio import encode_pcm, read_wav
from ingest.client import StreamOptions, StreamResult, stream_file
from ingest.loadtest import (
    Bounds,
    CapacityReport,
    ClipAudio,
    ClipSession,
    Level,
    LoadReport,
    Pacer,
    aggregate,
    capacity,
    geometric_ramp,
    holds,
    markdown_table,
    next_level,
    play_streams,
    plot,
    search_capacity,
)
from tests.unit.fake_server import start_server

pytestmark = pytest.mark.timeout(60)

SAMPLE = Path(__file__).resolve().parents[2] / "ingest" / "samples" / "jfk.wav"


def report(streams: int, commit_p95: float = 1.0, sustained: int | None = None, **kw: Any) -> LoadReport:
    values: dict[str, Any] = dict(
        streams=streams,
        sustained=streams if sustained is None else sustained,
        partial_p50_s=0.3,
        partial_p95_s=0.5,
        commit_p50_s=commit_p95 / 2,
        commit_p95_s=commit_p95,
        rtf=0.1 * streams,
        wer=0.1,
        audio_s=10.0 * streams,
        errors=0,
        generator_cpu=(0.01,),
    )
    values.update(kw)
    return LoadReport(**values)


# -- search ---------------------------------------------------------------------------------


def test_geometric_ramp() -> None:
    """Doubling from 1 to the cap; a small factor still grows by at least one stream."""
    assert geometric_ramp(1, 2, 256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert geometric_ramp(1, 1.5, 10) == [1, 2, 3, 5, 8]
    with pytest.raises(ValueError):
        geometric_ramp(4, 1.0, 8)


def simulate(true_capacity: int, ramp: list[int], resolution: int = 1) -> list[int]:
    """The levels :func:`next_level` visits on a server that holds exactly up to a capacity."""
    outcomes: dict[int, bool] = {}
    visited = []
    while (n := next_level(outcomes, ramp, resolution)) is not None:
        visited.append(n)
        outcomes[n] = n <= true_capacity
    assert capacity(outcomes) == min(true_capacity, max(ramp)) or resolution > 1
    return visited


def test_search_ramps_then_bisects_to_the_exact_capacity() -> None:
    """Up the ramp until a level fails, then bisect between the last good and first bad."""
    ramp = geometric_ramp(1, 2, 256)
    assert simulate(5, ramp) == [1, 2, 4, 8, 6, 5]
    assert simulate(4, ramp) == [1, 2, 4, 8, 6, 5]
    assert simulate(200, ramp) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 192, 224, 208, 200, 204, 202, 201]


def test_search_edges() -> None:
    """Nothing holds: stop at once; everything holds: stop at the top of the ramp; a coarse
    resolution stops bisecting early."""
    assert simulate(0, [1, 2, 4]) == [1]
    assert simulate(10, [1, 2, 4]) == [1, 2, 4]
    outcomes: dict[int, bool] = {}
    for n in simulate(100, geometric_ramp(1, 2, 256), resolution=16):
        outcomes[n] = n <= 100
    assert 100 - 16 < capacity(outcomes) <= 100


def test_capacity_ignores_a_lucky_level_above_a_failure() -> None:
    """Noise: a level that held above one that failed does not count."""
    assert capacity({1: True, 2: True, 4: False, 6: True}) == 2
    assert next_level({1: True, 2: True, 4: False, 6: True}, [1, 2, 4, 8]) == 3


def test_holds_needs_the_bound_and_every_stream_sustained() -> None:
    """Median commit p95 within the bound and all streams sustained; NaN (no commits) fails."""
    bounds = Bounds(max_commit_p95_s=4.0)
    assert holds(4, aggregate([report(4, 3.9), report(4, 4.5), report(4, 3.0)]), bounds)
    assert not holds(4, aggregate([report(4, 4.1), report(4, 4.5), report(4, 3.0)]), bounds)
    assert not holds(4, aggregate([report(4, 1.0, sustained=3)] * 3), bounds)
    assert holds(4, aggregate([report(4, 1.0, sustained=3)] * 3), Bounds(4.0, min_sustained=0.75))
    assert not holds(4, aggregate([report(4, float("nan"))] * 3), bounds)


def test_aggregate_gives_median_and_range() -> None:
    """Every metric over the runs: median, min, max."""
    stats = aggregate([report(8, 5.0), report(8, 2.0, sustained=7), report(8, 3.0, generator_cpu=(0.2, 0.5))])
    p95 = stats["commit_p95_s"]
    assert (p95.median, p95.lo, p95.hi) == (3.0, 2.0, 5.0)
    assert (stats["sustained"].median, stats["sustained"].lo) == (8.0, 7.0)
    assert stats["generator_cpu_max"].hi == 0.5  # the busiest generator process of a run
    with pytest.raises(ValueError):
        aggregate([])


def test_search_capacity_runs_each_level_repeat_times() -> None:
    """The driver asks for each level ``repeat`` times and records the median verdict."""
    asked: list[int] = []

    async def level(n: int) -> LoadReport:
        asked.append(n)
        return report(n, commit_p95=0.8 * n)  # the bound of 4 s is crossed past 5 streams

    result = asyncio.run(search_capacity(level, [1, 2, 4, 8], Bounds(4.0), repeat=3))
    assert asked == [1] * 3 + [2] * 3 + [4] * 3 + [8] * 3 + [6] * 3 + [5] * 3
    assert result.capacity == 5
    assert [lv.held for lv in result.sorted_levels()] == [True, True, True, True, False, False]


def sample_report() -> CapacityReport:
    levels = [
        Level(n, runs, aggregate(runs), holds(n, aggregate(runs), Bounds()))
        for n, runs in {
            1: [report(1, 1.0), report(1, 1.2), report(1, 1.1)],
            2: [report(2, 2.0), report(2, 2.5), report(2, 3.0)],
            4: [report(4, 5.0), report(4, 6.0, sustained=3), report(4, float("nan"))],
        }.items()
    ]
    return CapacityReport(Bounds(), levels)


def test_markdown_table_shows_median_and_spread() -> None:
    """One row per level, ``median (min-max)`` where the runs differ, ``-`` for a missing value."""
    table = markdown_table(sample_report()).splitlines()
    assert len(table) == 2 + 3
    assert table[0].count("|") == table[1].count("|") == table[2].count("|")
    assert "| 1 | 3 | 1 |" in table[2] and "1.10 (1.00-1.20)" in table[2] and table[2].endswith("| yes |")
    assert "2.50 (2.00-3.00)" in table[3]
    assert "| 4 (3-4) |" in table[4] and "| - |" in table[4] and table[4].endswith("| no |")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    """A real PNG file, even with a level missing values."""
    path = tmp_path / "plots" / "capacity.png"
    plot(sample_report(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000


def test_report_json_has_capacity_and_runs() -> None:
    """The JSON report keeps every run besides the aggregate."""
    data = sample_report().to_json(machine="test")
    assert data["capacity"] == 2 and data["machine"] == "test"
    assert [len(lv["runs"]) for lv in data["levels"]] == [3, 3, 3]
    assert data["levels"][1]["stats"]["commit_p95_s"] == {"median": 2.5, "lo": 2.0, "hi": 3.0}


# -- generator ------------------------------------------------------------------------------


def test_precomputed_frames_are_the_bytes_the_sdk_sends() -> None:
    """Frame k of a clip, encoded once, equals what the SDK encodes from its replay buffer."""
    opts = StreamOptions()
    clip = ClipAudio.read(SAMPLE, opts)
    wav = read_wav(SAMPLE)
    step = int(opts.chunk_s * wav.sample_rate)
    assert clip.step == step and len(clip.frames) == math.ceil(len(wav.samples) / step)
    for k in (0, 1, len(clip.frames) // 2, len(clip.frames) - 1):
        assert clip.frames[k] == encode_pcm(wav.samples[k * step : (k + 1) * step], "pcm_s16le")
    # the session hands out the shared bytes object for whole frames, and encodes anything else
    session = ClipSession("ws://unused", clip, opts, None)
    for chunk in clip.chunks[:3]:
        session.take(chunk)
    assert session._payload(step, 2 * step) is clip.frames[1]
    assert session._payload(step // 2, step) == encode_pcm(wav.samples[step // 2 : step], "pcm_s16le")


class Recorder:
    """Wraps ``ClientConnection.send`` to record every binary frame a stream sends."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.frames: list[bytes] = []
        original = ClientConnection.send

        async def send(ws: ClientConnection, message: Any, *args: Any, **kwargs: Any) -> None:
            if isinstance(message, bytes):
                self.frames.append(message)
            await original(ws, message, *args, **kwargs)

        monkeypatch.setattr(ClientConnection, "send", send)


def test_generator_sends_what_the_sdk_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a real socket, the paced generator's frames equal ``stream_file``'s, sped up 8x."""

    async def both(url: str) -> tuple[list[bytes], list[bytes], StreamResult, StreamResult]:
        recorder = Recorder(monkeypatch)
        sdk = await stream_file(url, SAMPLE, StreamOptions(speed=8.0))
        sdk_frames, recorder.frames = recorder.frames, []
        (gen,), _ = await play_streams(url, [SAMPLE], speed=8.0)
        return sdk_frames, recorder.frames, sdk, gen

    async def main() -> tuple[list[bytes], list[bytes], StreamResult, StreamResult]:
        async with await start_server() as server:
            port = next(iter(server.sockets)).getsockname()[1]
            return await both(f"ws://127.0.0.1:{port}")

    sdk_frames, gen_frames, sdk, gen = asyncio.run(main())
    assert gen_frames == sdk_frames and len(gen_frames) == 110
    assert gen.text == sdk.text and gen.summary is not None and gen.summary.audio_seconds == 11.0
    assert [a for a, _ in gen.sent] == pytest.approx([a for a, _ in sdk.sent])


def test_pacer_keeps_real_time_for_many_streams() -> None:
    """20 streams share one timer: no frame is captured early (beyond the slack), frames are
    not late on the whole (loose bound: this machine is shared), and every word is timed."""

    async def main() -> tuple[list[StreamResult], float]:
        async with await start_server() as server:
            port = next(iter(server.sockets)).getsockname()[1]
            return await play_streams(f"ws://127.0.0.1:{port}", [SAMPLE] * 20, speed=2.0)

    results, cpu = asyncio.run(main())
    assert all(r.error is None and r.summary is not None for r in results)
    for r in results:
        times = np.array([at for _, at in r.sent])
        audio = np.array([a for a, _ in r.sent])
        due = times[0] + (audio - audio[0]) / 2.0  # 2x real time from the first frame
        assert (times - due).min() >= -Pacer().slack_s - 1e-6
        assert np.median(times - due) < 0.25
        assert len(r.commit_lags()) == 11 and max(r.commit_lags()) < 2.0
    assert 0 < cpu <= 1.05  # one process: at most one core
