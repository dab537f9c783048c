"""The rendered manifests: lint, Kubernetes and KubeRay schemas, and what a platform team checks
(non-root pods, resources everywhere, Redis reachable only from Ray pods, PDBs, monitoring)."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.helm.chart import (
    CHART,
    K8S_SCHEMAS,
    VARIANTS,
    Obj,
    helm,
    matches,
    only,
    pod_templates,
    render,
    variant_values,
    worker_group,
)

KUBE_VERSION = "1.30.0"
CUSTOM_KINDS = {"RayService", "PodMonitor", "ServiceMonitor"}


def strict(schema: Any) -> Any:
    """SOURCES.md: forbid unknown keys on every object schema that lists its properties and
    does not preserve unknown fields (the API server would prune a misspelt key silently)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in out
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def rayservice_validator() -> jsonschema.Draft7Validator:
    path = K8S_SCHEMAS / "kuberay-v1.7.0" / "rayservice.v1.schema.json"
    if not path.is_file():
        pytest.skip(f"KubeRay CRD schema not found at {path} (set RAYSCRIBE_K8S_SCHEMAS)")
    return jsonschema.Draft7Validator(strict(json.loads(path.read_text())))


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_strict(variant: str) -> None:
    assert helm is not None
    report = helm.lint(CHART, variant_values(variant), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("variant", VARIANTS)
def test_core_objects_match_kubernetes_schemas(rendered: dict[str, list[Obj]], variant: str) -> None:
    core = [o for o in rendered[variant] if o["kind"] not in CUSTOM_KINDS]
    assert {"PodDisruptionBudget"} <= {o["kind"] for o in core}
    for obj in core:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rayservice_matches_the_strict_kuberay_crd(
    rendered: dict[str, list[Obj]], variant: str, rayservice_validator: jsonschema.Draft7Validator
) -> None:
    rs = only(rendered[variant], "RayService")
    assert rs["apiVersion"] == "ray.io/v1"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in rayservice_validator.iter_errors(rs)]
    assert not errors


def test_the_strict_crd_schema_catches_a_misspelt_key(
    rendered: dict[str, list[Obj]], rayservice_validator: jsonschema.Draft7Validator
) -> None:
    rs = copy.deepcopy(only(rendered["default"], "RayService"))
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplica"] = 1
    assert not rayservice_validator.is_valid(rs)


def test_head_runs_no_replicas_and_autoscaling_is_in_tree(rendered: dict[str, list[Obj]]) -> None:
    rc = only(rendered["default"], "RayService")["spec"]["rayClusterConfig"]
    assert rc["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert rc["enableInTreeAutoscaling"] is True
    assert worker_group(only(rendered["default"], "RayService"), "asr")["minReplicas"] == 0


def custom_resources(group: Obj) -> dict[str, float]:
    """KubeRay's rayStartParams ``resources``: a JSON object quoted for the shell."""
    raw = group["rayStartParams"]["resources"]
    assert raw.startswith('"') and raw.endswith('"'), raw
    parsed: dict[str, float] = json.loads(raw[1:-1].replace('\\"', '"'))
    return parsed


def test_worker_groups_advertise_their_custom_resource(rendered: dict[str, list[Obj]]) -> None:
    rs = only(rendered["default"], "RayService")
    assert custom_resources(worker_group(rs, "asr")) == {"asr": 1}
    assert custom_resources(worker_group(rs, "ingress")) == {"ingress": 2}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_runs_as_non_root_without_privileges(rendered: dict[str, list[Obj]], variant: str) -> None:
    objects = rendered[variant]
    templates = pod_templates(objects)
    assert {"head", "worker/ingress", "worker/asr"} <= set(templates)
    for name, tpl in templates.items():
        pod = tpl["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 1000, name
        for c in tpl["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
    autoscaler = only(objects, "RayService")["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert autoscaler["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_has_requests_and_limits(rendered: dict[str, list[Obj]], variant: str) -> None:
    objects = rendered[variant]
    containers = [(n, c) for n, t in pod_templates(objects).items() for c in t["spec"]["containers"]]
    autoscaler = only(objects, "RayService")["spec"]["rayClusterConfig"]["autoscalerOptions"]
    containers.append(("autoscaler", autoscaler))
    for name, c in containers:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)


@pytest.mark.parametrize("variant", ["default", "gcs-ft"])
def test_network_policy_lets_only_ray_pods_reach_redis(rendered: dict[str, list[Obj]], variant: str) -> None:
    objects = rendered[variant]
    policy = only(objects, "NetworkPolicy")
    templates = pod_templates(objects)
    redis_labels = only(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert matches(policy["spec"]["podSelector"], redis_labels)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector / ipBlock: this namespace only
    ray_pods = [t["metadata"]["labels"] for n, t in templates.items() if not n.startswith("StatefulSet")]
    assert len(ray_pods) == 3 and all(matches(peer["podSelector"], labels) for labels in ray_pods)
    assert not matches(peer["podSelector"], redis_labels)
    other_release = {**ray_pods[0], "app.kubernetes.io/instance": "other"}
    assert not matches(peer["podSelector"], other_release)


def test_no_network_policy_without_the_in_cluster_redis(rendered: dict[str, list[Obj]]) -> None:
    assert not [o for o in rendered["external-redis"] if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_worker_group_has_a_disruption_budget(rendered: dict[str, list[Obj]], variant: str) -> None:
    objects = rendered[variant]
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    templates = pod_templates(objects)
    for group in ("ingress", "asr"):
        labels = templates[f"worker/{group}"]["metadata"]["labels"]
        covering = [p for p in pdbs if matches(p["spec"]["selector"], labels)]
        assert len(covering) == 1 and covering[0]["spec"]["maxUnavailable"] == 1, group
    assert not any(matches(p["spec"]["selector"], templates["head"]["metadata"]["labels"]) for p in pdbs)


def test_ingress_routes_websockets_to_the_serve_service(chart: Any) -> None:
    objects = render(chart, {"ingress": {"enabled": True, "host": "asr.example.org"}})
    ing = only(objects, "Ingress")
    kubernetes_validate.validate(ing, KUBE_VERSION, strict=True)
    serve_svc = only(objects, "RayService")["spec"]["serveService"]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": serve_svc["metadata"]["name"], "port": {"number": 8000}}
    assert serve_svc["metadata"]["name"] == "rayscribe-serve-svc"  # KubeRay's own naming
    assert serve_svc["spec"]["ports"] == [
        {"name": "serve", "port": 8000, "targetPort": 8000, "protocol": "TCP"}
    ]
    for a in ("proxy-read-timeout", "proxy-send-timeout"):
        assert ing["metadata"]["annotations"][f"nginx.ingress.kubernetes.io/{a}"] == "3600"


def test_monitors_scrape_the_ray_metrics_port_of_ray_pods_only(chart: Any) -> None:
    values = {"metrics": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}}
    objects = render(chart, values)
    templates = pod_templates(objects)
    ray_pods = {n: t for n, t in templates.items() if not n.startswith("StatefulSet")}
    for tpl in ray_pods.values():
        ports = {p["name"]: p["containerPort"] for p in tpl["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == 8080
    redis_labels = only(objects, "StatefulSet")["spec"]["template"]["metadata"]["labels"]

    pm = only(objects, "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert all(matches(pm["spec"]["selector"], t["metadata"]["labels"]) for t in ray_pods.values())
    assert not matches(pm["spec"]["selector"], redis_labels)

    svc = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics"))
    kubernetes_validate.validate(svc, KUBE_VERSION, strict=True)
    selector = {"matchLabels": svc["spec"]["selector"]}
    assert all(matches(selector, t["metadata"]["labels"]) for t in ray_pods.values())
    assert not matches(selector, redis_labels)
    sm = only(objects, "ServiceMonitor")
    assert matches(sm["spec"]["selector"], svc["metadata"]["labels"])
