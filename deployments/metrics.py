"""rayscribe's Prometheus metrics, defined in one place, exported through Ray Serve's metrics.

Each process creates the metric objects once, on first use (:func:`instruments`).  Inside a
Serve replica, ``ray.serve.metrics`` then tags every series with its deployment, replica and
application.  Ray prefixes names with ``ray_`` and suffixes counters with ``_total``, so
``rayscribe_audio_seconds`` is scraped as ``ray_rayscribe_audio_seconds_total``.  Every Ray
node's metrics agent serves them (``ray.nodes()[i]["MetricsExportPort"]``).

The ingress records its sessions through one :class:`StreamMetrics` per stream.  The ASR
replica records batches through :func:`batch_started` and :func:`batch_done`.  Importing
this module is cheap: Ray is imported on first use, not here.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.audio import TARGET_RATE

if TYPE_CHECKING:
    from deployments.transcript import DecodeRequest, Word
    from ingest.errors import RayscribeError

LATENCY_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
DECODE_BUCKETS_S = (0.01, 0.025, *LATENCY_BUCKETS_S)
QUEUE_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, *LATENCY_BUCKETS_S)
BATCH_BUCKETS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)

# session outcomes (tag ``outcome`` of rayscribe_sessions_ended)
COMPLETED, ERROR, DRAINED, DISCONNECTED = "completed", "error", "drained", "disconnected"


@dataclass(frozen=True)
class MetricDef:
    name: str  # as defined; Ray exports it as ray_<name>, counters with _total
    kind: str  # counter | gauge | histogram
    description: str
    tags: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()

    def exported(self) -> set[str]:
        """The Prometheus series names this metric is scraped as."""
        base = f"ray_{self.name}"
        if self.kind == "counter":
            return {f"{base}_total"}
        if self.kind == "histogram":
            return {f"{base}_bucket", f"{base}_count", f"{base}_sum"}
        return {base}


DEFINITIONS = (
    MetricDef("rayscribe_active_sessions", "gauge", "Streams open on this ingress replica."),
    MetricDef("rayscribe_sessions_started", "counter", "Streams started (kind: new | resumed).", ("kind",)),
    MetricDef(
        "rayscribe_sessions_ended",
        "counter",
        "Streams ended (outcome: completed | error | drained | disconnected).",
        ("outcome",),
    ),
    MetricDef("rayscribe_audio_seconds", "counter", "Seconds of audio received (16 kHz, after resampling)."),
    MetricDef(
        "rayscribe_partial_latency_seconds",
        "histogram",
        "From the arrival at the ingress of the newest audio a partial covers to sending the partial.",
        boundaries=LATENCY_BUCKETS_S,
    ),
    MetricDef(
        "rayscribe_commit_lag_seconds",
        "histogram",
        "Per committed word: from the arrival of the audio where it ends to sending its final.",
        boundaries=LATENCY_BUCKETS_S,
    ),
    MetricDef(
        "rayscribe_decode_seconds",
        "histogram",
        "ASR replica: model time per batch.",
        boundaries=DECODE_BUCKETS_S,
    ),
    MetricDef(
        "rayscribe_batch_size", "histogram", "ASR replica: requests per batch.", boundaries=BATCH_BUCKETS
    ),
    MetricDef(
        "rayscribe_queue_wait_seconds",
        "histogram",
        "ASR: from the ingress issuing a decode call to the start of the batch that runs it.",
        boundaries=QUEUE_BUCKETS_S,
    ),
    MetricDef(
        "rayscribe_decodes",
        "counter",
        "ASR replica: decode requests run (encoder: float32 | bfloat16 | float16).",
        ("encoder",),
    ),
    MetricDef(
        "rayscribe_decode_calls",
        "counter",
        "Ingress: calls to the ASR deployment (a decode each, or the decodes gathered within "
        "ingress.decode_gather_s); decodes per call = rayscribe_decodes over this.",
    ),
    MetricDef(
        "rayscribe_errors",
        "counter",
        "Streams ended by a typed error (code: the error code; close_code: the WebSocket close code).",
        ("code", "close_code"),
    ),
    MetricDef(
        "rayscribe_archive_writes",
        "counter",
        "Transcript archive writes (outcome: written | retried | failed | dropped).",
        ("outcome",),
    ),
)


# Serve's own series that the Grafana dashboard also shows (checked in the e2e test)
SERVE_BUILTINS = ("ray_serve_replica_processing_queries", "ray_serve_batch_wait_time_ms_bucket")


def exported_names() -> set[str]:
    """Every Prometheus series name rayscribe exports (for the dashboard check)."""
    return {name for d in DEFINITIONS for name in d.exported()}


class _Unexported:
    """Stands in for a metric where Ray is not installed."""

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...

    def set(self, value: float, tags: dict[str, str] | None = None) -> None: ...

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None: ...


@functools.cache
def instruments() -> dict[str, Any]:
    """This process's metric objects, by name (created on first use, inside the replica, so
    Serve's deployment/replica tags are set)."""
    try:
        from ray.serve import metrics
    except ImportError:  # the session run without Ray (scripts/inproc_capacity.py): no export
        return {d.name: _Unexported() for d in DEFINITIONS}

    made: dict[str, Any] = {}
    for d in DEFINITIONS:
        tags: Any = d.tags or None  # Ray annotates tag_keys as tuple[str] (one element)
        if d.kind == "counter":
            made[d.name] = metrics.Counter(d.name, description=d.description, tag_keys=tags)
        elif d.kind == "gauge":
            made[d.name] = metrics.Gauge(d.name, description=d.description, tag_keys=tags)
        else:
            made[d.name] = metrics.Histogram(
                d.name, description=d.description, boundaries=list(d.boundaries), tag_keys=tags
            )
    return made


def _inc(name: str, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
    instruments()[name].inc(value, tags=tags)


def _observe(name: str, value: float) -> None:
    instruments()[name].observe(max(0.0, value))


# --- ingress ------------------------------------------------------------------------


def set_active_sessions(n: int) -> None:
    instruments()["rayscribe_active_sessions"].set(n)


def count_error(error: RayscribeError | type[RayscribeError]) -> None:
    _inc("rayscribe_errors", tags={"code": error.code, "close_code": str(error.close_code)})


def count_archive(outcome: str) -> None:
    """A session archive write: written, retried (an attempt failed), failed (given up after
    the last retry) or dropped (the queue was full)."""
    _inc("rayscribe_archive_writes", tags={"outcome": outcome})


def decode_call() -> None:
    """The ingress sent one call to the ASR deployment (one decode, or a gathered few)."""
    _inc("rayscribe_decode_calls")


def stamp(request: DecodeRequest) -> DecodeRequest:
    """The request, stamped with the (wall clock) time the ingress issues it: the ASR replica
    measures queue wait from it."""
    return dataclasses.replace(request, issued_at=time.time())


class ArrivalClock:
    """When the audio at stream second ``t`` arrived at the ingress.

    Holds (stream seconds at the end of a frame, monotonic arrival time) per frame, in stream
    order.  :meth:`forget` drops frames no later query needs; ``max_frames`` bounds it anyway.
    """

    def __init__(self, max_frames: int = 8192) -> None:
        self.max_frames = max_frames
        self._ends: list[float] = []
        self._arrivals: list[float] = []
        self._floor: float | None = None  # stream seconds where the oldest frame held starts

    def __len__(self) -> int:
        return len(self._ends)

    def add(self, audio_end_s: float, now: float, duration_s: float = 0.0) -> None:
        """A frame ending at ``audio_end_s`` (``duration_s`` long) arrived at ``now``."""
        if self._ends and audio_end_s <= self._ends[-1]:
            return  # no new audio (an empty frame)
        if not self._ends:  # the first frame, or the first after a gap (resume)
            self._floor = audio_end_s - duration_s
        self._ends.append(audio_end_s)
        self._arrivals.append(now)
        if len(self._ends) > self.max_frames:
            self._drop(len(self._ends) - self.max_frames)

    def arrival(self, t: float) -> float | None:
        """Arrival time of the first frame ending at or after ``t``; None if that audio did
        not arrive through this clock (before its first frame, forgotten, or not yet)."""
        eps = 1e-6
        if self._floor is None or t < self._floor - eps:
            return None
        i = bisect.bisect_left(self._ends, t - eps)
        return self._arrivals[i] if i < len(self._ends) else None

    def forget(self, before_s: float) -> None:
        """Drop frames that end before ``before_s`` (queries will not go back past it)."""
        self._drop(bisect.bisect_left(self._ends, before_s - 1e-6))

    def _drop(self, n: int) -> None:
        if n <= 0:
            return
        self._floor = self._ends[n - 1]
        del self._ends[:n], self._arrivals[:n]


def latencies(clock: ArrivalClock, ends: Sequence[float], now: float) -> list[float]:
    """``now`` minus the arrival of the audio at each of ``ends`` (unknown ones skipped)."""
    out = []
    for t in ends:
        arrived = clock.arrival(t)
        if arrived is not None:
            out.append(now - arrived)
    return out


def outcome(close_code: int | None, error: RayscribeError | None) -> str:
    """How a stream ended, from its protocol's close code and error."""
    if error is not None:
        return ERROR
    if close_code == 1000:
        return COMPLETED
    if close_code == 1012:
        return DRAINED
    return DISCONNECTED


class StreamMetrics:
    """One stream's metrics: audio in, partial latency, commit lag, start and end."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.arrivals = ArrivalClock()

    def started(self, resumed: bool) -> None:
        _inc("rayscribe_sessions_started", tags={"kind": "resumed" if resumed else "new"})

    def audio(self, audio_end_s: float, samples: int) -> None:
        """A frame of ``samples`` (16 kHz) arrived; the stream's audio now ends at ``audio_end_s``."""
        seconds = samples / TARGET_RATE
        if seconds > 0:
            self.arrivals.add(audio_end_s, self.clock(), seconds)
            _inc("rayscribe_audio_seconds", seconds)

    def partial(self, audio_end_s: float) -> None:
        for lag in latencies(self.arrivals, [audio_end_s], self.clock()):
            _observe("rayscribe_partial_latency_seconds", lag)

    def committed(self, words: Sequence[Word]) -> None:
        if not words:
            return
        for lag in latencies(self.arrivals, [w.end for w in words], self.clock()):
            _observe("rayscribe_commit_lag_seconds", lag)
        self.arrivals.forget(words[-1].end)  # later finals and partials end after it

    def ended(self, close_code: int | None, error: RayscribeError | None) -> None:
        _inc("rayscribe_sessions_ended", tags={"outcome": outcome(close_code, error)})
        if error is not None:
            count_error(error)


# --- ASR replica ----------------------------------------------------------------------


def batch_started(requests: Sequence[DecodeRequest]) -> None:
    """A batch starts: its size, and how long each request waited since it was issued."""
    now = time.time()
    _observe("rayscribe_batch_size", len(requests))
    for r in requests:
        if r.issued_at > 0:
            _observe("rayscribe_queue_wait_seconds", now - r.issued_at)


def batch_done(requests: int, seconds: float, encoder: str) -> None:
    _observe("rayscribe_decode_seconds", seconds)
    _inc("rayscribe_decodes", requests, {"encoder": encoder})
