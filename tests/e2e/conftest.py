"""One real local Ray + Serve app for the whole e2e tier (replicas get num_cpus: 0)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

TEST_MAX_SESSIONS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    import ray
    from ray import serve

    from deployments.local import start_local

    url = start_local(
        port=free_port(),
        num_cpus=2,
        overrides={
            "Ingress": {"ray_actor_options": {"num_cpus": 0}},
            "ASRModel": {"ray_actor_options": {"num_cpus": 0}, "autoscaling_config": None, "num_replicas": 1},
        },
        args_override={
            "engine": {"num_threads": 2},  # num_cpus 0 would leave torch on one thread
            "ingress": {"max_sessions": TEST_MAX_SESSIONS, "max_frame_bytes": 65536},
        },
    )
    yield url
    serve.shutdown()
    ray.shutdown()
