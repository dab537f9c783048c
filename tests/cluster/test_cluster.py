"""The serving plane on a real multi-node Ray cluster: placement by the custom resources of
``ray_config.yaml``, a whole ASR node lost under live streams, autoscaling on a ramp of streams.

Real Ray (four raylets), real Serve, real redis-server, real WebSockets; the model is the
stand-in of tests/cluster/app.py (why: its module docstring).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from ray import serve

from cluster.faults import replica_nodes
from deployments.ingress import STREAM_PATH
from ingest.client import StreamOptions, StreamResult
from ingest.livestreams import LiveStreams, wait_until
from tests.cluster.app import APP, build, expected_text
from tests.cluster.conftest import LocalCluster
from tests.e2e.test_failover import check_session

pytestmark = [pytest.mark.cluster]
OPTS = StreamOptions(speed=1.0)
TWO_FIXED = {"autoscaling_config": None, "num_replicas": 2}
# the shipped policy and bounds, with delays and windows at test speed
FAST_AUTOSCALING = {
    "autoscaling_config": {
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 2,  # one per ASR node
        "upscale_delay_s": 1,
        "downscale_delay_s": 4,
        "look_back_period_s": 2,
        "metrics_interval_s": 1,
    }
}


def deploy(c: LocalCluster, asr: dict[str, Any]) -> str:
    serve.run(build(c.redis_url, asr), name=APP, route_prefix="/")
    return f"ws://127.0.0.1:{c.port}{STREAM_PATH}"


def speech(seconds: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(rng.standard_normal(seconds * 16000) * 0.01).astype(np.float32) for _ in range(n)]


def check_streams(results: list[StreamResult], seconds: int) -> None:
    """Every stream one unbroken session with every word once: the stand-in's words are known."""
    for r in results:
        check_session(r)
        assert r.text == expected_text(seconds), r.text


def wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    asyncio.run(wait_until(check, timeout_s, what))


def asr_nodes_now() -> list[str]:
    return sorted(replica_nodes("ASRModel").values())


def test_replicas_run_only_on_the_nodes_of_their_role(ray_cluster: LocalCluster) -> None:
    deploy(ray_cluster, TWO_FIXED)
    # one `asr` slot per ASR node: one replica on each, none on the head or the ingress node
    assert asr_nodes_now() == sorted(ray_cluster.asr_nodes)
    assert set(replica_nodes("Ingress").values()) == {ray_cluster.ingress_node}
    assert len(replica_nodes("Ingress")) == 2


def test_asr_node_lost_under_live_streams_loses_no_session(ray_cluster: LocalCluster) -> None:
    url = deploy(ray_cluster, TWO_FIXED)
    seconds, victim = 14, []

    async def fault(streams: LiveStreams) -> None:
        await wait_until(lambda: streams.all_have(2), 30, "two finals on every stream")
        victim.append(asr_nodes_now()[0])
        await asyncio.to_thread(ray_cluster.remove_asr_node, victim[0])

    results = asyncio.run(LiveStreams(url, speech(seconds, 4), OPTS).run(fault))
    check_streams(results, seconds)
    # the decodes went on on the other node's replica; the lost one cannot come back (no slot)
    # (once the controller has noticed the node is gone: seconds on a cold machine)
    (survivor,) = ray_cluster.asr_nodes
    wait(lambda: asr_nodes_now() == [survivor], 30, "the lost node's replica gone")
    # a replacement machine joins (what the cluster autoscaler does): Serve restores the replica
    fresh = ray_cluster.add_asr_node()
    wait(lambda: asr_nodes_now() == sorted([survivor, fresh]), 60, "the ASR replica on the new node")
    assert victim[0] not in ray_cluster.asr_nodes


def test_asr_scales_up_under_a_ramp_of_streams_and_back_down_after(ray_cluster: LocalCluster) -> None:
    url = deploy(ray_cluster, FAST_AUTOSCALING)
    wait(lambda: len(asr_nodes_now()) == 1, 60, "initial_replicas: 1")
    seconds, audio = 40, speech(40, 6)
    seen: dict[str, Any] = {}

    async def ramp(first: LiveStreams) -> None:
        # two streams keep one replica in its band (busy ~0.4); four more saturate it
        await wait_until(lambda: first.all_have(2), 30, "two finals on the first streams")
        assert len(asr_nodes_now()) == 1
        more = LiveStreams(url, audio[2:], OPTS)
        seen["more"] = asyncio.create_task(more.run())
        # (a replica start imports torch: ~10-20 s on a cold 2-core machine)
        await wait_until(lambda: len(asr_nodes_now()) == 2, 50, "a second ASR replica under load")
        seen["scaled_at"] = (list(first.finals), list(more.finals))

    first = LiveStreams(url, audio[:2], OPTS)
    results = asyncio.run(_both(first, ramp, seen))
    check_streams(results, seconds)
    # the scale-up came while the streams were live, well before their ends
    assert all(f < seconds - 5 for group in seen["scaled_at"] for f in group), seen["scaled_at"]
    wait(lambda: len(asr_nodes_now()) == 1, 60, "scale-down after the load ended")


async def _both(
    first: LiveStreams, ramp: Callable[[LiveStreams], Any], seen: dict[str, Any]
) -> list[StreamResult]:
    results = await first.run(ramp)
    return results + list(await seen["more"])
