"""The metric definitions, the arrival clock behind partial latency and commit lag, what a
stream records (against fake instruments), and the Grafana dashboard against the
definitions."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from deployments import metrics
from deployments.metrics import ArrivalClock, StreamMetrics
from deployments.transcript import DecodeRequest, Word
from ingest.errors import Overloaded, ProtocolError

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "rayscribe.json"


class Recorder:
    """Stands in for one Ray metric object."""

    def __init__(self) -> None:
        self.values: list[tuple[float, dict[str, str]]] = []

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        self.values.append((value, tags or {}))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.values.append((value, tags or {}))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.values.append((value, tags or {}))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, Recorder]:
    fakes: dict[str, Recorder] = defaultdict(Recorder)
    monkeypatch.setattr(metrics, "instruments", lambda: fakes)
    return fakes


def test_clock_gives_the_arrival_of_the_frame_holding_t() -> None:
    clock = ArrivalClock()
    for i in range(1, 6):  # 0.1 s frames arriving at 10, 11, ... 14
        clock.add(i * 0.1, 10.0 + i - 1, 0.1)
    assert clock.arrival(0.0) == 10.0
    assert clock.arrival(0.05) == 10.0
    assert clock.arrival(0.1) == 10.0  # the end of the first frame is in it
    assert clock.arrival(0.11) == 11.0
    assert clock.arrival(0.5) == 14.0
    assert clock.arrival(0.51) is None  # not arrived yet
    assert clock.arrival(-0.1) is None


def test_clock_knows_nothing_before_its_first_frame() -> None:
    clock = ArrivalClock()  # a resumed stream: its audio starts at 30 s
    clock.add(30.1, 5.0, 0.1)
    clock.add(30.2, 6.0, 0.1)
    assert clock.arrival(29.5) is None
    assert clock.arrival(30.0) == 5.0
    assert clock.arrival(30.15) == 6.0


def test_clock_ignores_empty_frames() -> None:
    clock = ArrivalClock()
    clock.add(0.1, 1.0, 0.1)
    clock.add(0.1, 2.0, 0.0)
    assert len(clock) == 1 and clock.arrival(0.1) == 1.0


def test_clock_forgets_old_frames_and_stays_bounded() -> None:
    clock = ArrivalClock(max_frames=10)
    for i in range(1, 21):
        clock.add(i * 0.1, float(i), 0.1)
    assert len(clock) == 10
    assert clock.arrival(0.95) is None  # dropped by the bound
    assert clock.arrival(1.05) == 11.0
    clock.forget(1.5)
    assert clock.arrival(1.35) is None and clock.arrival(1.45) == clock.arrival(1.5) == 15.0
    assert len(clock) == 6


def test_latencies_skip_unknown_audio() -> None:
    clock = ArrivalClock()
    clock.add(1.0, 100.0, 1.0)
    clock.add(2.0, 101.0, 1.0)
    assert metrics.latencies(clock, [0.5, 1.5, 2.5], now=101.5) == [1.5, 0.5]


@pytest.mark.parametrize(
    ("close_code", "error", "outcome"),
    [
        (1000, None, "completed"),
        (1012, None, "drained"),
        (None, None, "disconnected"),
        (1002, ProtocolError("x"), "error"),
    ],
)
def test_outcome(close_code: int | None, error: ProtocolError | None, outcome: str) -> None:
    assert metrics.outcome(close_code, error) == outcome


def test_stream_records_audio_latency_lag_and_errors(recorded: dict[str, Recorder]) -> None:
    now = [0.0]
    meter = StreamMetrics(clock=lambda: now[0])
    meter.started(resumed=False)
    for i in range(1, 21):  # 2 s of audio in 0.1 s frames, arriving in real time
        now[0] = i * 0.1
        meter.audio(i * 0.1, 1600)
    now[0] = 2.3
    meter.committed([Word(" a", 0.0, 0.55), Word(" b", 0.6, 1.0)])
    meter.partial(2.0)
    meter.committed([])
    meter.ended(1002, ProtocolError("bad"))

    assert recorded["rayscribe_sessions_started"].values == [(1.0, {"kind": "new"})]
    assert sum(v for v, _ in recorded["rayscribe_audio_seconds"].values) == pytest.approx(2.0)
    lags = [v for v, _ in recorded["rayscribe_commit_lag_seconds"].values]
    assert lags == pytest.approx([2.3 - 0.6, 2.3 - 1.0])
    assert [v for v, _ in recorded["rayscribe_partial_latency_seconds"].values] == pytest.approx([0.3])
    assert recorded["rayscribe_sessions_ended"].values == [(1.0, {"outcome": "error"})]
    assert recorded["rayscribe_errors"].values == [(1.0, {"code": "protocol_error", "close_code": "1002"})]


def test_error_counted_from_its_class(recorded: dict[str, Recorder]) -> None:
    metrics.count_error(Overloaded)
    assert recorded["rayscribe_errors"].values == [(1.0, {"code": "overloaded", "close_code": "1013"})]


def test_batch_records_size_decode_time_and_queue_wait(recorded: dict[str, Recorder]) -> None:
    import numpy as np

    audio = np.zeros(1600, dtype=np.float32)
    requests = [metrics.stamp(DecodeRequest(audio)), DecodeRequest(audio)]  # the second: unstamped
    assert requests[0].issued_at > 0 and requests[1].issued_at == 0
    metrics.batch_started(requests)
    metrics.batch_done(len(requests), 0.25, "bfloat16")
    assert [v for v, _ in recorded["rayscribe_batch_size"].values] == [2]
    waits = [v for v, _ in recorded["rayscribe_queue_wait_seconds"].values]
    assert len(waits) == 1 and 0 <= waits[0] < 5
    assert recorded["rayscribe_decode_seconds"].values == [(0.25, {})]
    assert recorded["rayscribe_decodes"].values == [(2, {"encoder": "bfloat16"})]


def test_real_instruments_are_made_once_per_process() -> None:
    made = metrics.instruments()
    assert made is metrics.instruments()
    assert set(made) == {d.name for d in metrics.DEFINITIONS}
    assert all(d.name.startswith("rayscribe_") for d in metrics.DEFINITIONS)


def test_exported_names_follow_rays_naming() -> None:
    names = metrics.exported_names()
    assert "ray_rayscribe_audio_seconds_total" in names
    assert "ray_rayscribe_commit_lag_seconds_bucket" in names
    assert "ray_rayscribe_active_sessions" in names


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_is_a_grafana_model_with_a_prometheus_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    variables = dashboard["templating"]["list"]
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in variables)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]


def test_dashboard_only_uses_defined_metrics() -> None:
    exprs = dashboard_expressions(json.loads(DASHBOARD.read_text()))
    used = {name for e in exprs for name in re.findall(r"\bray_[a-z0-9_]+", e)}
    ours = {n for n in used if n.startswith("ray_rayscribe_")}
    assert used - ours <= set(metrics.SERVE_BUILTINS), used - ours
    assert ours <= metrics.exported_names(), ours - metrics.exported_names()
    # every rayscribe metric is on the dashboard
    shown = {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in ours}
    assert shown == {f"ray_{d.name}" for d in metrics.DEFINITIONS}
    # quantiles are taken over bucket rates
    for e in exprs:
        if "histogram_quantile" in e:
            assert re.search(r"rate\(ray_\w+_bucket", e), e


def test_dashboard_batch_size_mean_is_requests_over_batches() -> None:
    """Ray exports a histogram's ``_sum`` from its buckets' midpoints (its OpenTelemetry
    recorder), so ``_sum / _count`` of an integer series is not its mean: the H200 run of
    stop 25 read 35.7 rows where 31.7 were decoded per batch.  The panel divides the decode
    counter by the batch count instead."""
    dashboard = json.loads(DASHBOARD.read_text())
    panel = next(p for p in dashboard["panels"] if p.get("title") == "Batch size")
    exprs = [t["expr"] for t in panel["targets"]]
    assert not any("batch_size_sum" in e for e in exprs), exprs
    assert any(
        re.search(r"rate\(ray_rayscribe_decodes_total\b.*/.*rate\(ray_rayscribe_batch_size_count", e)
        for e in exprs
    )
