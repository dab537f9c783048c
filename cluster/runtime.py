"""Bring up Ray for the embedded local default (one machine, Ray started for you)."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)


def init_local_ray(num_cpus: int | None = None, object_store_mb: int = 256) -> None:
    """Start (or join an already started) local Ray without the dashboard."""
    if ray.is_initialized():
        return
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 2,
        include_dashboard=False,
        object_store_memory=object_store_mb * 1024 * 1024,
        log_to_driver=bool(int(os.environ.get("RAYSCRIBE_RAY_LOGS", "0"))),
        runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
    )
