"""A real multi-node Ray cluster on one machine (``ray.cluster_utils.Cluster``): a head with no
CPUs (GCS, Serve controller, the proxy), an ingress node and two ASR nodes advertising the
custom resources ``ray_config.yaml`` places replicas by; a real redis-server.  One cluster for
the tier; each test deploys the app it needs (Serve updates it in place)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from cluster.redis_server import EmbeddedRedis, free_port

MB = 1024 * 1024
# the Serve autoscaling loop at test speed: replicas push their stats twice a second
FAST_METRICS = {
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    # Ray's files and its "current cluster" address file stay out of the default /tmp/ray
    "RAY_TMPDIR": "/tmp/ray-wtc",
}


@dataclass
class LocalCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    redis_url: str
    port: int
    ingress_node: str = ""
    asr_nodes: dict[str, Any] = field(default_factory=dict)  # node id -> Node

    def add_asr_node(self) -> str:
        node = self.cluster.add_node(num_cpus=2, resources={"asr": 1}, object_store_memory=80 * MB)
        self.asr_nodes[node.node_id] = node
        return str(node.node_id)

    def remove_asr_node(self, node_id: str) -> None:
        """The node's raylet and every process on it die at once, as a lost machine."""
        self.cluster.remove_node(self.asr_nodes.pop(node_id), allow_graceful=False)


# module scope: the e2e tier starts its own local Ray, which must not find this one connected
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as env, EmbeddedRedis() as redis:
        for k, v in FAST_METRICS.items():
            env.setenv(k, v)
        os.makedirs(FAST_METRICS["RAY_TMPDIR"], exist_ok=True)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "gcs_server_port": free_port(), "object_store_memory": 80 * MB},
        )
        try:
            t = LocalCluster(cluster, redis.url, free_port())
            ingress = cluster.add_node(num_cpus=2, resources={"ingress": 2}, object_store_memory=80 * MB)
            t.ingress_node = str(ingress.node_id)
            t.add_asr_node()
            t.add_asr_node()
            cluster.wait_for_nodes()
            cluster.connect()
            serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": t.port})
            yield t
        finally:
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
            cluster.shutdown()
