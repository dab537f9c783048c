"""Autoscaling the ASR deployment on "streams are falling behind".

A live stream keeps at most one decode in flight, so Serve's default signal (ongoing requests
per replica) stays near the number of streams whether the replica keeps up or not.  What does
move with overload is the engine itself: how much of the time it is busy, and how long a decode
waits before its batch starts.  Each ASR replica measures both over a short window
(:class:`LoadWindow`) and reports them through Serve's ``record_autoscaling_stats`` hook;
:class:`StreamLagPolicy` (``autoscaling_config.policy`` in ``ray_config.yaml``) turns them into a
replica count.

Ray 2.60 wraps a custom policy (``ray.serve.autoscaling_policy._apply_autoscaling_config``):
it applies ``upscale_delay_s`` / ``downscale_delay_s`` (a decision must hold that long before
it takes effect; a "hold" in between resets it), ``upscaling_factor`` / ``downscaling_factor``,
and then the ``min_replicas`` / ``max_replicas`` bounds.  The policy itself only says how many
replicas the load needs.  ``policy_kwargs`` reach a class policy's constructor, once per
deployment; the replicas' stats arrive averaged over ``look_back_period_s`` in
``ctx.aggregated_metrics[name][replica_id]``.

This module is pickled by value into the Serve controller: it imports nothing heavy.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

BUSY = "busy_fraction"  # share of the window the engine spent decoding, 0..1
QUEUE_WAIT = "queue_wait_s"  # mean wait from the ingress issuing a decode to its batch start
DECODE_RATE = "decodes_per_s"  # decodes per second: about the streams a replica keeps up with


class LoadWindow:
    """One ASR replica's engine load over the last ``window_s`` seconds (monotonic clock).

    Batches run one at a time (``@serve.batch``, one concurrent batch): the busy fraction is the
    share of the window covered by batches, the one running now included.
    """

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._batches: deque[tuple[float, float]] = deque()  # (start, end) of finished batches
        self._running_since: float | None = None
        self._waits: deque[tuple[float, float]] = deque()  # (batch start, one request's wait)

    def batch_started(self, now: float, waits: list[float]) -> None:
        self._running_since = now
        self._waits.extend((now, max(0.0, w)) for w in waits)

    def batch_done(self, now: float) -> None:
        if self._running_since is not None:
            self._batches.append((self._running_since, now))
        self._running_since = None

    def stats(self, now: float) -> dict[str, float]:
        since = now - self.window_s
        while self._batches and self._batches[0][1] <= since:
            self._batches.popleft()
        while self._waits and self._waits[0][0] <= since:
            self._waits.popleft()
        busy = sum(end - max(start, since) for start, end in self._batches)
        if self._running_since is not None:
            busy += now - max(self._running_since, since)
        waits = [w for _, w in self._waits]
        return {
            BUSY: min(1.0, busy / self.window_s),
            QUEUE_WAIT: sum(waits) / len(waits) if waits else 0.0,
            DECODE_RATE: len(waits) / self.window_s,
        }


class LagBounds(BaseModel):
    """``policy_kwargs`` of :class:`StreamLagPolicy`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    busy_high: float = Field(0.85, gt=0.0, le=1.0)
    queue_wait_high_s: float = Field(1.0, gt=0.0)
    busy_target: float = Field(0.6, gt=0.0, le=1.0)
    busy_low: float = Field(0.3, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def ordered(self) -> LagBounds:
        if not self.busy_low < self.busy_target < self.busy_high:
            raise ValueError("need busy_low < busy_target < busy_high")
        return self


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str  # behind | idle | hold | starting | no-stats


def decide(
    busy: list[float], waits: list[float], running: int, target: int, lo: int, hi: int, b: LagBounds
) -> Decision:
    """Replicas the reported load needs (pure; :class:`StreamLagPolicy` feeds it a context).

    ``busy`` / ``waits``: one value per reporting replica; ``running`` / ``target``: replicas
    running now / the current target; ``lo`` / ``hi``: the (capacity-adjusted) bounds.
    """

    def bounded(n: int) -> int:
        return max(lo, min(hi, n))

    if running < target:  # a scale-up is still starting: its replicas have no stats yet
        return Decision(bounded(target), "starting")
    if not busy:
        return Decision(bounded(target), "no-stats")
    total = sum(busy)
    mean = total / len(busy)
    # the engine time the streams need, spread so each replica sits at busy_target
    needed = math.ceil(total / b.busy_target - 1e-9)
    if mean > b.busy_high or max(waits, default=0.0) > b.queue_wait_high_s:
        return Decision(bounded(max(running + 1, needed)), "behind")
    if mean < b.busy_low and running > lo:
        return Decision(bounded(min(running - 1, needed)), "idle")
    return Decision(bounded(target), "hold")


class StreamLagPolicy:
    """Serve custom autoscaling policy (``autoscaling_config.policy.policy_function``)."""

    def __init__(self, **kwargs: Any) -> None:
        self.bounds = LagBounds.model_validate(kwargs)

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        """``ctx``: ``ray.serve.config.AutoscalingContext`` (typed Any: Ray ships no stubs)."""
        metrics: dict[str, dict[Any, float]] = ctx.aggregated_metrics or {}
        running = set(ctx.running_replicas)
        busy = [v for r, v in metrics.get(BUSY, {}).items() if r in running]
        waits = [v for r, v in metrics.get(QUEUE_WAIT, {}).items() if r in running]
        d = decide(
            busy,
            waits,
            ctx.current_num_replicas,
            ctx.target_num_replicas,
            ctx.capacity_adjusted_min_replicas,
            ctx.capacity_adjusted_max_replicas,
            self.bounds,
        )
        state = dict(ctx.policy_state)
        state["stream_lag"] = {"reason": d.reason, "busy": busy, "waits": waits}
        return d.replicas, state
