"""One real local Ray + Serve app (2 ingress replicas, as shipped) and one real redis-server
for the whole e2e tier (replicas get num_cpus: 0)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cluster.redis_server import EmbeddedRedis, free_port
from cluster.serve_config import merge

TEST_MAX_SESSIONS = 8  # per ingress replica
_APP: dict[str, Any] = {}  # where the tier's app runs: port, redis_url


def deploy(asr_replicas: int = 1, ingress: dict[str, Any] | None = None) -> str:
    """(Re)deploy the tier's app; Serve updates a running app in place."""
    from deployments.local import start_local

    args = {
        "engine": {"num_threads": 2},  # num_cpus 0 would leave torch on one thread
        "ingress": merge({"max_sessions": TEST_MAX_SESSIONS, "max_frame_bytes": 65536}, ingress or {}),
    }
    return start_local(
        port=_APP["port"],
        num_cpus=2,
        redis_url=_APP["redis_url"],
        overrides={
            "Ingress": {"ray_actor_options": {"num_cpus": 0}},
            "ASRModel": {
                "ray_actor_options": {"num_cpus": 0},
                "autoscaling_config": None,
                "num_replicas": asr_replicas,
            },
        },
        args_override=args,
    )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def server_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    import ray
    from ray import serve

    _APP.update(port=free_port(), redis_url=redis_server.url)
    yield deploy()
    serve.shutdown()
    ray.shutdown()
