"""Bring up Ray for the embedded local default (one machine, Ray started for you)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import ray

log = logging.getLogger(__name__)


# One machine is every kind of node: it advertises plenty of each role's slots (the custom
# resources ray_config.yaml places replicas by); its CPUs bound what runs.
LOCAL_ROLE_SLOTS = {"asr": 64.0, "ingress": 64.0}

# Serve's proxy on each node calls this import path for the middlewares it runs: WebSocket
# audio paced at the app's limits (deployments/proxy_guard.py).  Processes that start Ray set
# both variables; the proxies inherit them.
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "deployments.proxy_guard:middlewares"
PROXY_PACE_ENV = "RAYSCRIBE_PROXY_PACE"


def proxy_env(limits: Mapping[str, Any]) -> dict[str, str]:
    """The environment that makes Serve's proxies pace WebSocket audio at these ingress
    limits (``max_speed``, ``max_lead_s``; a missing one: the protocol's default)."""
    pace = {k: float(limits[k]) for k in ("max_speed", "max_lead_s") if k in limits}
    return {PROXY_CALLBACK_ENV: PROXY_CALLBACK, PROXY_PACE_ENV: json.dumps(pace)}


def init_local_ray(
    num_cpus: int | None = None,
    object_store_mb: int = 256,
    metrics_export_port: int | None = None,
    resources: dict[str, float] | None = None,
) -> None:
    """Start (or join an already started) local Ray without the dashboard, advertising
    ``resources`` (default :data:`LOCAL_ROLE_SLOTS`).  Its metrics agent serves Prometheus
    text on ``metrics_export_port`` (a free port if None)."""
    if ray.is_initialized():
        return
    extra: dict[str, Any] = (
        {} if metrics_export_port is None else {"_metrics_export_port": metrics_export_port}
    )
    ray.init(
        **extra,
        num_cpus=num_cpus or os.cpu_count() or 2,
        resources=LOCAL_ROLE_SLOTS if resources is None else resources,
        include_dashboard=False,
        object_store_memory=object_store_mb * 1024 * 1024,
        log_to_driver=bool(int(os.environ.get("RAYSCRIBE_RAY_LOGS", "0"))),
        runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
    )


def metrics_url() -> str:
    """Where this Ray node's metrics agent serves Prometheus text (``ray_*`` series)."""
    here = ray.get_runtime_context().get_node_id()
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    node = next(n for n in nodes if n["NodeID"] == here)
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
