"""serveConfigV2 is ray_config.yaml plus the documented override layer, and nothing else."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.serve_config import apply_layer, load_layer
from tests.helm.chart import (
    CHART,
    ROOT,
    VARIANTS,
    Obj,
    chart_layers,
    deployment,
    helm,
    render,
    serve_config,
    variant_values,
)


def apply_overrides(base: Obj, values: Obj) -> Obj:
    """The chart's override list in Python (templates/_helpers.tpl, rayscribe.serveConfig):
    the `serve` values (and the auth layer) in the shape cluster.serve_config.apply_layer applies."""
    for layer in chart_layers(values):
        base = apply_layer(base, layer)
    return base


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_config_is_ray_config_plus_the_overrides(
    chart: Any, rendered: dict[str, list[Obj]], ray_config: Obj, variant: str
) -> None:
    values = chart.merge_values(variant_values(variant))
    # auth on: the serve values last, after the GPU layer where the workers have GPUs
    assert chart_layers(values)[-1] == values["serve"]
    assert len(chart_layers(values)) == (2 if values["asrWorkers"]["gpusPerPod"] else 1)
    assert serve_config(rendered[variant]) == apply_overrides(ray_config, values)


def test_default_override_list(rendered: dict[str, list[Obj]], ray_config: Obj) -> None:
    cfg = serve_config(rendered["default"])
    # ray_config.yaml is the cluster config: proxies, host and placement come from the file
    assert cfg["proxy_location"] == ray_config["proxy_location"] == "EveryNode"
    assert cfg["http_options"] == ray_config["http_options"] and cfg["http_options"]["host"] == "0.0.0.0"
    ingress = deployment(cfg, "Ingress")
    assert ingress["ray_actor_options"] == {"num_cpus": 1, "resources": {"ingress": 1}}
    asr = deployment(cfg, "ASRModel")
    assert asr["ray_actor_options"]["resources"] == {"asr": 1}
    assert asr["ray_actor_options"]["num_gpus"] == 0
    assert asr["autoscaling_config"]["max_replicas"] == 2
    # the file's own settings come through untouched, the autoscaling policy included
    (app,) = cfg["applications"]
    assert app["args"] == ray_config["applications"][0]["args"]
    assert asr["user_config"] == deployment(ray_config, "ASRModel")["user_config"]
    file_policy = deployment(ray_config, "ASRModel")["autoscaling_config"]["policy"]
    assert asr["autoscaling_config"]["policy"] == file_policy


def test_values_carry_no_copy_of_ray_config(chart: Any) -> None:
    serve = chart.values["serve"]
    assert serve["config"] == {}  # the file is the cluster config already
    assert set(serve["applications"]) == {"rayscribe"}
    assert set(serve["applications"]["rayscribe"]) == {"deployments"}  # no args, no import_path
    assert serve["applications"]["rayscribe"]["deployments"] == {
        "ASRModel": {"autoscaling_config": {"max_replicas": 2}}
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_config_passes_serve_and_app_schemas(rendered: dict[str, list[Obj]], variant: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    from deployments.app import AppArgs

    cfg = serve_config(rendered[variant])
    schema = ServeDeploySchema.parse_obj(cfg)
    assert schema.proxy_location == "EveryNode"
    (app,) = cfg["applications"]
    args = AppArgs.model_validate(app["args"])
    assert args.ingress.store.prefix == "rayscribe:"


def test_gpu_values_put_the_asr_replicas_on_gpus(rendered: dict[str, list[Obj]]) -> None:
    asr = deployment(serve_config(rendered["gpu"]), "ASRModel")
    assert asr["ray_actor_options"]["num_gpus"] == 0.5
    assert asr["ray_actor_options"]["resources"] == {"asr": 1}
    # each GPU pod's asr slots hold replicas whose shares fill its GPUs, no more
    workers = variant_values("gpu")["asrWorkers"]
    assert workers["asrSlots"] * 0.5 == workers["gpusPerPod"]


def test_gpu_workers_get_the_gpu_layer_not_the_cpu_batches(rendered: dict[str, list[Obj]]) -> None:
    """GPU workers apply cluster/layers/gpu.yaml itself (the batches measured on an H100), not
    ray_config.yaml's CPU batches of 8; CPU workers do not."""
    gpu = load_layer("gpu")["applications"]["rayscribe"]
    layer_asr = gpu["deployments"]["ASRModel"]
    cfg = serve_config(rendered["gpu"])
    asr = deployment(cfg, "ASRModel")
    assert asr["user_config"] == layer_asr["user_config"] and asr["user_config"]["max_batch_size"] > 8
    batch = asr["user_config"]["max_batch_size"]
    assert asr["max_ongoing_requests"] == layer_asr["max_ongoing_requests"] >= batch
    engine = cfg["applications"][0]["args"]["engine"]
    assert engine["graph_max_batch"] == gpu["args"]["engine"]["graph_max_batch"]
    cpu = deployment(serve_config(rendered["default"]), "ASRModel")
    assert cpu["user_config"]["max_batch_size"] == 8 and cpu["ray_actor_options"]["num_gpus"] == 0


def test_a_chart_with_gpu_workers_needs_the_gpu_layer_link() -> None:
    link = CHART / "files" / "layers" / "gpu.yaml"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert link.resolve() == (ROOT / "cluster" / "layers" / "gpu.yaml").resolve()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"serve": {"applications": {"rayscribe": {"deployments": {"ASR": {"num_replicas": 2}}}}}}, "ASR"),
        ({"serve": {"applications": {"other": {"route_prefix": "/x"}}}}, "other"),
    ],
)
def test_overrides_of_unknown_names_fail_the_render(chart: Any, values: Obj, message: str) -> None:
    assert helm is not None
    with pytest.raises(helm.HelmRenderError, match=f"{message}: ray_config.yaml has no such"):
        render(chart, values)


def test_chart_reads_the_repository_ray_config_through_a_relative_symlink() -> None:
    link = CHART / "files" / "ray_config.yaml"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert link.resolve() == (ROOT / "ray_config.yaml").resolve()


def test_packaged_chart_carries_ray_config_itself(tmp_path: Path, rendered: dict[str, list[Obj]]) -> None:
    assert helm is not None
    archive = helm.package(CHART, destination=tmp_path)
    with tarfile.open(archive) as tar:
        member = tar.getmember("rayscribe/files/ray_config.yaml")
        assert member.isfile()  # dereferenced, not a dangling link
        data = tar.extractfile(member)
        assert data is not None and data.read() == (ROOT / "ray_config.yaml").read_bytes()
        layer = tar.getmember("rayscribe/files/layers/gpu.yaml")
        data = tar.extractfile(layer)
        assert layer.isfile() and data is not None
        assert data.read() == (ROOT / "cluster" / "layers" / "gpu.yaml").read_bytes()
    with helm.Chart.load(archive) as packaged:
        assert serve_config(render(packaged, {})) == serve_config(rendered["default"])


def test_asr_and_ingress_bounds_fit_their_worker_groups(chart: Any, rendered: dict[str, list[Obj]]) -> None:
    """Serve must never want more replicas than the worker groups can ever hold."""
    for variant, objects in rendered.items():
        values = chart.merge_values(variant_values(variant))
        cfg = serve_config(objects)
        asr_max = deployment(cfg, "ASRModel")["autoscaling_config"]["max_replicas"]
        assert asr_max <= values["asrWorkers"]["maxReplicas"] * values["asrWorkers"]["asrSlots"], variant
        ingress = deployment(cfg, "Ingress")["num_replicas"]
        ing = values["ingressWorkers"]
        assert ingress <= ing["maxReplicas"] * ing["ingressSlots"], variant
    ha = chart.merge_values(variant_values("ha"))["ingressWorkers"]
    assert deployment(serve_config(rendered["ha"]), "Ingress")["num_replicas"] <= (
        ha["minReplicas"] * ha["ingressSlots"]
    )


def test_ray_config_is_read_not_copied() -> None:
    """No template or values file restates the file's app settings."""
    texts = [p.read_text() for p in CHART.rglob("*") if p.is_file() and not p.is_symlink()]
    for needle in ("deployments.app:build_app", "decode_retry_budget_s", "batch_wait_timeout_s"):
        assert not any(needle in t for t in texts), needle
    assert yaml.safe_load((ROOT / "ray_config.yaml").read_text())["applications"]
