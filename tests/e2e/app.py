"""The e2e tier's app: where it runs, and (re)deploying it with test overrides.  Its own
module, so the conftest fixtures and the tests share one copy of this state."""

from __future__ import annotations

from typing import Any

from cluster.serve_config import merge

TEST_MAX_SESSIONS = 8  # per ingress replica
APP: dict[str, Any] = {}  # where the tier's app runs: port, redis_url


def deploy(asr_replicas: int = 1, ingress: dict[str, Any] | None = None) -> str:
    """(Re)deploy the tier's app; Serve updates a running app in place."""
    from deployments.local import start_local

    args = {
        "engine": {"num_threads": 2},  # num_cpus 0 would leave torch on one thread
        "ingress": merge({"max_sessions": TEST_MAX_SESSIONS, "max_frame_bytes": 65536}, ingress or {}),
    }
    return start_local(
        port=APP["port"],
        num_cpus=2,
        redis_url=APP["redis_url"],
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
