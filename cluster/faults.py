"""Fault injection and lookup for operators and fault tests: which replica serves a session,
and killing a Serve replica actor the way a crashed process dies."""

from __future__ import annotations

from typing import Any

import ray
import redis


def replica_names(deployment: str, app: str = "rayscribe") -> list[str]:
    """Named actors of a deployment's live replicas (Serve names them ``...app#deployment#id``)."""
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and f"{app}#{deployment}#" in a["name"]
    )


def kill_replica(name: str) -> None:
    """``ray.kill`` without restart: the replica dies mid-request; Serve replaces it."""
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)


def owner_of(redis_url: str, session_id: str, prefix: str = "rayscribe:") -> str:
    """The ingress replica serving a session, as the session store records it."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        return str(client.hget(f"{prefix}s:{session_id}", "owner") or "")


def replica_nodes(deployment: str, app: str = "rayscribe") -> dict[str, str]:
    """Live replicas of a deployment -> the Ray node id each runs on.  Read from the GCS actor
    table (works without the dashboard, which ``ray.util.state`` needs)."""
    from ray._private import state

    actors: dict[str, Any] = state.actors()
    return {
        str(a["Name"]): str(a["Address"]["NodeID"])
        for a in actors.values()
        if a.get("State") == "ALIVE" and f"{app}#{deployment}#" in str(a.get("Name", ""))
    }


def replica_pids(deployment: str, app: str = "rayscribe") -> dict[str, int]:
    """Live replicas of a deployment -> their process id (this machine's), from the GCS actor
    table like :func:`replica_nodes`."""
    from ray._private import state

    actors: dict[str, Any] = state.actors()
    return {
        str(a["Name"]): int(a["Pid"])
        for a in actors.values()
        if a.get("State") == "ALIVE" and f"{app}#{deployment}#" in str(a.get("Name", ""))
    }
