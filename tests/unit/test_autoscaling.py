"""The ASR autoscaling policy with constructed contexts (no Ray cluster), and the replica's
load window with a fake clock."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve._private.constants import SERVE_AUTOSCALING_DECISION_TIMESTAMP_KEY
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from deployments.autoscaling import (
    BUSY,
    DECODE_RATE,
    QUEUE_WAIT,
    LagBounds,
    LoadWindow,
    StreamLagPolicy,
    decide,
)

DEP = DeploymentID(name="ASRModel", app_name="rayscribe")
B = LagBounds()


def replicas(n: int) -> list[ReplicaID]:
    return [ReplicaID(unique_id=f"r{i}", deployment_id=DEP) for i in range(n)]


def context(
    busy: list[float],
    waits: list[float] | None = None,
    target: int | None = None,
    running: int | None = None,
    config: AutoscalingConfig | None = None,
    state: dict[str, Any] | None = None,
    now: float = 1000.0,
) -> AutoscalingContext:
    reps = replicas(len(busy) if running is None else running)
    waits = waits if waits is not None else [0.0] * len(busy)
    cfg = config or AutoscalingConfig(min_replicas=1, max_replicas=4, upscale_delay_s=0, downscale_delay_s=0)
    return AutoscalingContext(
        deployment_id=DEP,
        deployment_name=DEP.name,
        app_name=DEP.app_name,
        current_num_replicas=len(reps),
        target_num_replicas=len(reps) if target is None else target,
        running_replicas=reps,
        total_num_requests=float(len(reps)),  # one decode in flight per stream: no signal
        total_queued_requests=0.0,
        aggregated_metrics={
            BUSY: dict(zip(reps, busy, strict=False)),
            QUEUE_WAIT: dict(zip(reps, waits, strict=False)),
        },
        raw_metrics={},
        capacity_adjusted_min_replicas=cfg.min_replicas,
        capacity_adjusted_max_replicas=cfg.max_replicas,
        policy_state=state or {},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=now,
        config=cfg,
    )


@pytest.mark.parametrize(
    ("busy", "waits", "want", "reason"),
    [
        ([0.95], [0.2], 2, "behind"),  # saturated engine
        ([0.5], [1.5], 2, "behind"),  # decodes queue behind a long batch
        ([0.99, 0.99], [2.0, 2.0], 4, "behind"),  # 1.98 busy-replicas need ceil(1.98 / 0.6) = 4
        ([0.6, 0.7], [0.1, 0.1], 2, "hold"),  # inside the band: keep
        ([0.1, 0.1, 0.0], [0.0, 0.0, 0.0], 1, "idle"),  # 0.2 busy-replicas fit on one
        ([0.25, 0.25, 0.25], [0.0] * 3, 2, "idle"),  # one fewer, never below what the load needs
        ([0.1], [0.0], 1, "hold"),  # at min_replicas: nothing to shed
    ],
)
def test_decide(busy: list[float], waits: list[float], want: int, reason: str) -> None:
    n = len(busy)
    d = decide(busy, waits, n, n, 1, 4, B)
    assert (d.replicas, d.reason) == (want, reason)


def test_decide_stays_within_bounds_and_waits_for_starting_replicas() -> None:
    assert decide([1.0] * 4, [5.0] * 4, 4, 4, 1, 4, B).replicas == 4  # at max already
    assert decide([0.0], [0.0], 1, 1, 2, 4, B).replicas == 2  # below min: raised
    # a scale-up from 1 to 3 is starting: hold the target, however loaded the first one is
    assert decide([1.0], [3.0], 1, 3, 1, 4, B).reason == "starting"
    assert decide([], [], 2, 2, 1, 4, B).replicas == 2  # no stats yet: keep


def test_bounds_must_be_ordered() -> None:
    with pytest.raises(ValidationError):
        LagBounds(busy_low=0.7, busy_target=0.6)
    with pytest.raises(ValidationError):
        StreamLagPolicy(busy_hgih=0.9)  # a typo in policy_kwargs fails the deploy


def test_policy_reads_the_replicas_stats_from_the_context() -> None:
    policy = StreamLagPolicy(busy_high=0.8)
    n, state = policy(context([0.82]))
    assert n == 2 and state["stream_lag"]["reason"] == "behind"
    # ongoing requests alone (total_num_requests) never scale it: an idle engine sheds replicas
    n, _ = policy(context([0.05, 0.05]))
    assert n == 1


def test_stats_of_stopped_replicas_are_ignored() -> None:
    ctx = context([0.95, 0.95], running=1)  # the second replica's stats are stale
    n, state = StreamLagPolicy()(ctx)
    assert state["stream_lag"]["busy"] == [0.95] and n == 2


def test_ray_applies_the_configured_delays_to_the_policy() -> None:
    """What the Serve controller runs: the policy wrapped by Ray's delay and bounds logic."""
    cfg = AutoscalingConfig(min_replicas=1, max_replicas=4, upscale_delay_s=10, downscale_delay_s=60)
    wrapped = _apply_autoscaling_config(StreamLagPolicy())
    n, state = wrapped(context([0.95], config=cfg))
    assert n == 1 and state["stream_lag"]["reason"] == "behind"  # the upscale delay starts
    # Ray 2.60 times the delay by wall clock from the first consecutive "up" decision
    started = state[SERVE_AUTOSCALING_DECISION_TIMESTAMP_KEY]
    assert started == pytest.approx(time.time(), abs=5)
    n, state = wrapped(context([0.95], config=cfg, state=state))
    assert n == 1  # still within upscale_delay_s
    state[SERVE_AUTOSCALING_DECISION_TIMESTAMP_KEY] = time.time() - 11
    n, _ = wrapped(context([0.95], config=cfg, state=state))
    assert n == 2  # "behind" held longer than upscale_delay_s: scaled up
    # a "hold" in between resets the pending decision
    n, state = wrapped(context([0.95], config=cfg))
    n, state = wrapped(context([0.7], config=cfg, state=state))
    assert n == 1 and state[SERVE_AUTOSCALING_DECISION_TIMESTAMP_KEY] is None


def test_load_window_busy_fraction_wait_and_rate() -> None:
    w = LoadWindow(window_s=10.0)
    w.batch_started(0.0, [0.5, 1.5])
    w.batch_done(4.0)
    w.batch_started(6.0, [0.1])
    stats = w.stats(8.0)  # 4 s done + 2 s running of 10 s
    assert stats[BUSY] == pytest.approx(0.6)
    assert stats[QUEUE_WAIT] == pytest.approx(0.7)
    assert stats[DECODE_RATE] == pytest.approx(0.3)
    w.batch_done(9.0)
    later = w.stats(25.0)  # the window moved past every batch: idle
    assert later == {BUSY: 0.0, QUEUE_WAIT: 0.0, DECODE_RATE: 0.0}


def test_load_window_counts_only_the_part_of_a_batch_inside_the_window() -> None:
    w = LoadWindow(window_s=5.0)
    w.batch_started(0.0, [])
    w.batch_done(8.0)
    assert w.stats(10.0)[BUSY] == pytest.approx(3.0 / 5.0)
    w.batch_started(10.0, [])
    assert w.stats(30.0)[BUSY] == 1.0  # a batch running for the whole window
