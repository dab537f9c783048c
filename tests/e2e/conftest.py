"""One real local Ray + Serve app (2 ingress replicas, as shipped) and one real redis-server
for the whole e2e tier (replicas get num_cpus: 0)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster.redis_server import EmbeddedRedis, free_port
from tests.e2e.app import APP, deploy


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def server_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    import ray
    from ray import serve

    APP.update(port=free_port(), redis_url=redis_server.url)
    with pytest.MonkeyPatch.context() as env:
        # Ray's processes push metrics every 10 s by default; the metrics test scrapes them
        env.setenv("RAY_metrics_report_interval_ms", "1000")
        yield deploy()
        serve.shutdown()
        ray.shutdown()
