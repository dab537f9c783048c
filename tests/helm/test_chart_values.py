"""Values: the strict schema rejects bad input; each variant (GPU, Redis modes, GCS fault
tolerance) renders what it promises."""

from __future__ import annotations

import base64
import json
from typing import Any, cast

import pytest
import redis

from tests.helm.chart import (
    CHART,
    Obj,
    deployment,
    helm,
    only,
    pod_templates,
    render,
    serve_config,
    worker_group,
)

REDIS_URL_VAR = "$(RAYSCRIBE_REDIS_PASSWORD)"
GPU_REPLICA = {"ray_actor_options": {"num_gpus": 1}}


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": 2}, "additional properties 'replicaCount'"),  # unknown top-level key
        ({"redis": {"auth": {"password": "x"}}}, "/redis/auth"),  # unknown nested key
        ({"asrWorkers": {"gpusPerPod": "1"}}, "/asrWorkers/gpusPerPod"),  # wrong type
        ({"ingressWorkers": {"minReplicas": -1}}, "/ingressWorkers/minReplicas"),  # negative
        ({"asrWorkers": {"maxReplicas": 0}}, "/asrWorkers/maxReplicas"),
        ({"rayVersion": "latest"}, "/rayVersion"),
        ({"serve": {"config": {"proxy_location": "Everywhere"}}}, "/serve/config/proxy_location"),
        ({"serve": {"config": {"http_option": {}}}}, "/serve/config"),
        (
            {"serve": {"applications": {"rayscribe": {"deployments": {"ASRModel": {"num_gpu": 1}}}}}},
            "/serve/applications/rayscribe/deployments/ASRModel",
        ),
        (
            {"serve": {"applications": {"rayscribe": {"deployments": {"Ingress": {"num_replicas": 0}}}}}},
            "/serve/applications/rayscribe/deployments/Ingress/num_replicas",
        ),
        ({"redis": {"external": {"url": "http://redis:6379"}}}, "/redis/external/url"),
        ({"head": {"resources": {"requests": {"cpu": "lots"}, "limits": {}}}}, "/head/resources"),
        ({"service": {"type": "ExternalName"}}, "/service/type"),
    ],
)
def test_schema_rejects_bad_values(chart: Any, values: Obj, where: str) -> None:
    assert helm is not None
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.render(values, name="rayscribe", namespace="rayscribe")


def test_schema_is_strict_on_the_main_objects() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    for key in ("image", "head", "ingressWorkers", "asrWorkers", "serve", "redis", "gcsFaultTolerance"):
        assert props[key]["additionalProperties"] is False, key
    assert schema["$defs"]["deploymentOverride"]["additionalProperties"] is False


def test_schema_deployment_keys_are_serve_deployment_options() -> None:
    from ray.serve.schema import DeploymentSchema

    schema = json.loads((CHART / "values.schema.json").read_text())
    keys = set(schema["$defs"]["deploymentOverride"]["properties"])
    fields = cast(dict[str, Any], DeploymentSchema.__fields__)  # ray's schema: pydantic v1 API
    assert keys <= set(fields) - {"name"}


def container(tpl: Obj) -> Obj:
    (c,) = tpl["spec"]["containers"]
    return dict(c)


def test_gpu_values_give_the_asr_group_gpus(rendered: dict[str, list[Obj]]) -> None:
    rs = only(rendered["gpu"], "RayService")
    asr = container(worker_group(rs, "asr")["template"])
    assert asr["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert asr["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert asr["image"].endswith("-cuda")
    tolerations = worker_group(rs, "asr")["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    ingress = container(worker_group(rs, "ingress")["template"])
    assert "nvidia.com/gpu" not in ingress["resources"]["limits"] and ingress["image"].endswith("-cpu")


def test_default_values_use_no_gpu(rendered: dict[str, list[Obj]]) -> None:
    text = json.dumps(rendered["default"])
    assert "nvidia.com/gpu" not in text and "-cuda" not in text


@pytest.mark.parametrize(
    "values",
    [
        # GPU pods (the GPU layer asks for one per replica), but values that take it back
        {
            "asrWorkers": {"gpusPerPod": 1},
            "serve": {
                "applications": {
                    "rayscribe": {"deployments": {"ASRModel": {"ray_actor_options": {"num_gpus": 0}}}}
                }
            },
        },
        {"serve": {"applications": {"rayscribe": {"deployments": {"ASRModel": GPU_REPLICA}}}}},
    ],
)
def test_gpu_workers_and_gpu_replicas_must_agree(chart: Any, values: Obj) -> None:
    assert helm is not None
    with pytest.raises(helm.HelmRenderError, match="gpusPerPod"):
        render(chart, values)


@pytest.mark.parametrize(("slots", "fits"), [(2, True), (3, False)])
def test_gpu_pods_hold_the_replicas_their_slots_admit(chart: Any, slots: int, fits: bool) -> None:
    """Each asr slot admits a replica of half a GPU (cluster/layers/gpu.yaml): three slots on a
    one-GPU pod would leave a replica pending that Serve counts on."""
    assert helm is not None
    values = {"asrWorkers": {"gpusPerPod": 1, "asrSlots": slots}}
    if fits:
        asr = deployment(serve_config(render(chart, values)), "ASRModel")
        assert asr["ray_actor_options"]["num_gpus"] == 0.5
    else:
        with pytest.raises(helm.HelmRenderError, match=r"asrSlots \(3\) x ASRModel num_gpus \(0.5\)"):
            render(chart, values)


def ray_env(objects: list[Obj]) -> dict[str, list[Obj]]:
    templates = pod_templates(objects)
    return {n: container(t)["env"] for n, t in templates.items() if not n.startswith("StatefulSet")}


def test_in_cluster_redis_has_aof_a_pvc_and_a_password(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["default"]
    sts = only(objects, "StatefulSet")
    c = container(sts["spec"]["template"])
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert {"mountPath": "/data", "name": "data"} in c["volumeMounts"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    secret = only(objects, "Secret")
    password = base64.b64decode(secret["data"]["redis-password"]).decode()
    assert len(password) == 32 and password.isalnum()  # safe inside a redis:// URL
    ref = c["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "redis-password"}


@pytest.mark.parametrize("variant", ["default", "gcs-ft", "ha"])
def test_ray_pods_get_a_redis_url_redis_py_accepts(rendered: dict[str, list[Obj]], variant: str) -> None:
    objects = rendered[variant]
    secret = only(objects, "Secret")["metadata"]["name"]
    for name, env in ray_env(objects).items():
        names = [e["name"] for e in env]
        # Kubernetes expands $(VAR) only from variables defined earlier in the list
        assert names.index("RAYSCRIBE_REDIS_PASSWORD") < names.index("RAYSCRIBE_REDIS_URL"), name
        pw = env[names.index("RAYSCRIBE_REDIS_PASSWORD")]["valueFrom"]["secretKeyRef"]
        assert pw["name"] == secret
        url = env[names.index("RAYSCRIBE_REDIS_URL")]["value"]
        assert REDIS_URL_VAR in url
        kwargs = redis.ConnectionPool.from_url(url.replace(REDIS_URL_VAR, "s3cret")).connection_kwargs
        assert kwargs["password"] == "s3cret" and kwargs["db"] == 0
        assert kwargs["host"] == "rayscribe-redis.rayscribe.svc" and kwargs["port"] == 6379


def test_existing_secret_replaces_the_generated_one(chart: Any) -> None:
    objects = render(chart, {"redis": {"auth": {"existingSecret": "mine", "existingSecretKey": "pw"}}})
    assert not [o for o in objects if o["kind"] == "Secret"]
    for env in ray_env(objects).values():
        assert env[0]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "pw"}
    sts_env = container(only(objects, "StatefulSet")["spec"]["template"])["env"]
    assert sts_env[0]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "pw"}


def test_external_redis_runs_no_redis_and_passes_the_url_secret(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["external-redis"]
    assert not [o for o in objects if o["kind"] in {"StatefulSet", "Secret"}]
    for name, env in ray_env(objects).items():
        (url,) = [e for e in env if e["name"] == "RAYSCRIBE_REDIS_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "rayscribe-redis-url", "key": "redis-url"}, name
        assert "RAYSCRIBE_REDIS_PASSWORD" not in {e["name"] for e in env}


def test_external_redis_url_is_stored_in_a_secret(chart: Any) -> None:
    url = "rediss://:pw@cache.example:6380/2"
    objects = render(chart, {"redis": {"enabled": False, "external": {"url": url}}})
    secret = only(objects, "Secret")
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == url
    assert url not in json.dumps(only(objects, "RayService"))  # only a reference in the CR
    for env in ray_env(objects).values():
        (ref,) = [e for e in env if e["name"] == "RAYSCRIBE_REDIS_URL"]
        assert ref["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]


def test_external_redis_needs_a_url(chart: Any) -> None:
    assert helm is not None
    with pytest.raises(helm.HelmRenderError, match="redis.external.url"):
        render(chart, {"redis": {"enabled": False}})


def test_gcs_fault_tolerance_uses_the_chart_redis(rendered: dict[str, list[Obj]]) -> None:
    default = only(rendered["default"], "RayService")["spec"]["rayClusterConfig"]
    assert "gcsFaultToleranceOptions" not in default
    objects = rendered["gcs-ft"]
    ft = only(objects, "RayService")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    svc = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "rayscribe-redis")
    assert ft["redisAddress"] == f"{svc['metadata']['name']}.rayscribe.svc:{svc['spec']['ports'][0]['port']}"
    secret = only(objects, "Secret")["metadata"]["name"]
    assert ft["redisPassword"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "redis-password"}
    assert ft["externalStorageNamespace"] == "rayscribe-gcs"


def test_gcs_fault_tolerance_on_an_external_redis(chart: Any) -> None:
    values = {
        "redis": {"enabled": False, "external": {"existingSecret": "url"}},
        "gcsFaultTolerance": {
            "enabled": True,
            "redisAddress": "gcs-redis.infra:6379",
            "passwordSecret": {"name": "gcs-redis", "key": "password"},
        },
    }
    ft = only(render(chart, values), "RayService")["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] == "gcs-redis.infra:6379"
    assert ft["redisPassword"]["valueFrom"]["secretKeyRef"] == {"name": "gcs-redis", "key": "password"}
    assert ft["externalStorageNamespace"] == "rayscribe"  # the release fullname by default


def test_every_ray_pod_paces_websocket_audio_at_the_configs_limits(rendered: dict[str, list[Obj]]) -> None:
    """Each pod runs a Serve proxy: it gets the proxy callback and ray_config.yaml's ingress
    audio limits (the same environment `rayscribe-cluster head/worker` sets)."""
    from cluster.cli import node_proxy_env

    want = node_proxy_env()
    pods = ray_env(rendered["default"])
    assert len(pods) >= 3  # head, ingress workers, ASR workers
    for name, env in pods.items():
        got = {e["name"]: e.get("value") for e in env}
        assert (
            got["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]
            == want["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]
        )
        assert json.loads(got["RAYSCRIBE_PROXY_PACE"]) == json.loads(want["RAYSCRIBE_PROXY_PACE"]), name
    assert json.loads(want["RAYSCRIBE_PROXY_PACE"])["max_lead_s"] > 0
