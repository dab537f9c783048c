"""Prometheus metrics end to end: stream real speech through the real app, provoke an error on
a second socket, scrape the Ray metrics agent and check that the rayscribe series moved.

The tier's app is shared, so every check is on the change from a scrape taken before."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from deployments.metrics import SERVE_BUILTINS
from ingest.cli import SAMPLE_WAV
from ingest.client import StreamOptions, stream_file

pytestmark = pytest.mark.e2e
CLIP_S = 11.0  # SAMPLE_WAV
Samples = dict[str, list[tuple[dict[str, str], float]]]
T = TypeVar("T")


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every replica's series of ``name`` that carry ``labels``."""
    return sum(v for tags, v in samples.get(name, []) if all(tags.get(k) == x for k, x in labels.items()))


def wait_for(probe: Callable[[], T], ok: Callable[[T], bool], timeout_s: float = 30.0) -> T:
    """Poll ``probe`` until ``ok`` holds for its value; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if ok(value) or time.monotonic() > deadline:
            assert ok(value), f"condition not met within {timeout_s} s: {value}"
            return value
        time.sleep(0.25)


async def audio_before_start(url: str) -> tuple[str, int | None]:
    async with connect(url) as ws:
        await ws.send(b"\x00\x00" * 100)
        error = json.loads(await ws.recv())
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()
        return str(error["code"]), ws.close_code


def test_metrics_move_with_a_live_stream_and_an_error(server_url: str) -> None:
    from cluster.runtime import metrics_url

    url = metrics_url()
    before = scrape(url)

    def delta(name: str, **labels: str) -> Callable[[Samples], float]:
        return lambda now: total(now, name, **labels) - total(before, name, **labels)

    active = delta("ray_rayscribe_active_sessions")

    async def run() -> tuple[float, tuple[str, int | None]]:
        stream = asyncio.create_task(stream_file(server_url, SAMPLE_WAV, StreamOptions(speed=1.0)))
        # the gauge shows the open stream while it runs
        during = await asyncio.to_thread(wait_for, lambda: scrape(url), lambda s: active(s) >= 1)
        bad = await audio_before_start(server_url)
        result = await stream
        assert result.error is None and result.close_code == 1000
        return active(during), bad

    open_streams, bad = asyncio.run(run())
    assert bad == ("protocol_error", 1002)

    checks: dict[str, Callable[[Samples], float]] = {
        "audio seconds": delta("ray_rayscribe_audio_seconds_total"),
        "commit lags": delta("ray_rayscribe_commit_lag_seconds_count"),
        "partial latencies": delta("ray_rayscribe_partial_latency_seconds_count"),
        "batches": delta("ray_rayscribe_batch_size_count"),
        "decode seconds": delta("ray_rayscribe_decode_seconds_sum"),
        "queue waits": delta("ray_rayscribe_queue_wait_seconds_count"),
        "decodes": delta("ray_rayscribe_decodes_total", encoder="float32"),  # cpu_bf16_encoder off
        "decode calls": delta("ray_rayscribe_decode_calls_total"),
        "new sessions": delta("ray_rayscribe_sessions_started_total", kind="new"),
        "completed": delta("ray_rayscribe_sessions_ended_total", outcome="completed"),
        "protocol errors": delta("ray_rayscribe_errors_total", code="protocol_error", close_code="1002"),
    }
    minimum = {"audio seconds": CLIP_S - 0.1, "protocol errors": 1.0}

    def moved(now: Samples) -> dict[str, float]:
        return {k: f(now) for k, f in checks.items() if f(now) < minimum.get(k, 1e-9)}

    after = wait_for(lambda: scrape(url), lambda s: not moved(s))
    # the stream has ended: the gauge came back down
    wait_for(lambda: scrape(url), lambda s: active(s) <= open_streams - 1)

    # Serve's own series that the dashboard shows are there too
    assert set(SERVE_BUILTINS) <= set(after), set(SERVE_BUILTINS) - set(after)

    # latencies are plausible on this machine: a partial within seconds of its audio
    lat_sum = delta("ray_rayscribe_partial_latency_seconds_sum")(after)
    lat_count = checks["partial latencies"](after)
    assert 0 < lat_sum / lat_count < 10
    buckets = [
        (tags["le"], v)
        for tags, v in after["ray_rayscribe_commit_lag_seconds_bucket"]
        if tags.get("deployment") == "Ingress"
    ]
    assert {le for le, _ in buckets} >= {"0.05", "1.0", "30.0", "+Inf"}
