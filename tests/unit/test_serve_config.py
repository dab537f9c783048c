from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.serve_config import apply_layer, load_layer, load_serve_config, merge, read_yaml
from deployments.asr import BatchConfig
from deployments.config import EngineConfig
from ingest.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_ray_config_yaml_is_a_valid_app_config() -> None:
    cfg = load_serve_config(ROOT / "ray_config.yaml")
    (app,) = cfg.applications
    assert app.import_path == "deployments.app:build_app"
    options = app.options()
    assert set(options) == {"Ingress", "ASRModel"}
    assert options["ASRModel"]["ray_actor_options"]["num_gpus"] == 0  # CPU by default
    assert "request_timeout_s" not in cfg.http_options.model_dump()  # it would cut WebSockets


def test_ray_config_args_validate_against_the_app_builder() -> None:
    from deployments.app import AppArgs

    args = AppArgs.model_validate(load_serve_config(ROOT / "ray_config.yaml").applications[0].args)
    assert args.ingress.policy.step_s == 1.0 and args.engine.device == "auto"


def test_unknown_deployment_option_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("applications:\n- import_path: x:y\n  deployments:\n  - name: A\n    num_gpu: 1\n")
    with pytest.raises(ConfigError, match="num_gpu"):
        load_serve_config(bad).applications[0].options()


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_serve_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("applications: 3")
    with pytest.raises(ConfigError):
        load_serve_config(tmp_path / "bad.yaml")


def test_merge_overrides_and_removes() -> None:
    base = {"a": {"x": 1, "y": 2}, "b": 3}
    assert merge(base, {"a": {"y": 5}, "b": None}) == {"a": {"x": 1, "y": 5}}


def test_build_app_is_a_valid_serve_app_builder() -> None:
    """What `serve run ray_config.yaml` does with import_path + args (without starting Ray)."""
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from deployments.app import build_app

    app_cfg = load_serve_config(ROOT / "ray_config.yaml").applications[0]
    app = call_user_app_builder_with_args_if_necessary(build_app, app_cfg.args)
    assert isinstance(app, Application)
    with pytest.raises(Exception, match="bogus"):
        call_user_app_builder_with_args_if_necessary(build_app, {"bogus": 1})


def test_a_stand_in_model_takes_the_asr_models_place_name_and_options() -> None:
    # scripts/serving_bench.py measures the serving plane with a stand-in in the ASRModel's
    # place: the ingress must get it under that name, with the config's options for it
    from ray import serve

    from deployments.app import compose

    @serve.deployment
    class StandIn:
        def __init__(self, batch_s: float, row_s: float) -> None:
            self.cost = (batch_s, row_s)

    def asr_of(app: Any) -> Any:
        return app._bound_deployment.init_args[0]._bound_deployment

    options = {"ASRModel": {"num_replicas": 3}}
    standin = asr_of(compose({}, options, (StandIn, (0.03, 0.001))))
    assert (standin.name, standin.func_or_class, standin.init_args) == (
        "ASRModel",
        StandIn.func_or_class,
        (0.03, 0.001),
    )
    assert standin.num_replicas == 3
    real = asr_of(compose({}, options))
    assert real.name == "ASRModel" and real.func_or_class is not StandIn.func_or_class
    assert real.init_args[0]["device"] == "auto" and real.num_replicas == 3


def test_local_runner_caps_asr_replicas_to_the_machine() -> None:
    from deployments.local import fit_replicas

    asr = {
        "ray_actor_options": {"num_cpus": 2},
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 4},
    }
    capped = fit_replicas(asr, cpus=2)["autoscaling_config"]
    assert capped == {"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 4}
    assert fit_replicas(asr, cpus=16)["autoscaling_config"]["max_replicas"] == 4
    assert fit_replicas({"num_replicas": 1}, cpus=2) == {"num_replicas": 1}


def test_ray_config_yaml_is_the_cluster_config() -> None:
    cfg = load_serve_config(ROOT / "ray_config.yaml")
    assert cfg.proxy_location == "EveryNode" and cfg.http_options.host == "0.0.0.0"
    options = cfg.applications[0].options()
    assert options["Ingress"]["ray_actor_options"]["resources"] == {"ingress": 1}
    assert options["ASRModel"]["ray_actor_options"]["resources"] == {"asr": 1}
    policy = options["ASRModel"]["autoscaling_config"]["policy"]
    assert policy["policy_function"] == "deployments.autoscaling:StreamLagPolicy"


def test_local_layer_makes_it_one_loopback_machine() -> None:
    cfg = load_serve_config(ROOT / "ray_config.yaml", [load_layer("local")])
    assert cfg.proxy_location == "HeadOnly" and cfg.http_options.host == "127.0.0.1"
    ingress = cfg.applications[0].options()["Ingress"]
    # the layer changes one key; the placement resource and the rest of the file stay
    assert ingress["ray_actor_options"] == {"num_cpus": 0, "resources": {"ingress": 1}}
    assert ingress["num_replicas"] == 2
    # ASR: a one-thread replica per core from the start, capped to the machine by the runner
    from deployments.local import fit_replicas

    asr = cfg.applications[0].options()["ASRModel"]
    assert asr["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0, "resources": {"asr": 1}}
    for cpus, replicas in ((1, 1), (2, 2), (16, 2)):
        auto = fit_replicas(asr, cpus)["autoscaling_config"]
        assert (auto["min_replicas"], auto["initial_replicas"]) == (replicas, replicas)
        assert auto["max_replicas"] == min(cpus, 4)


def test_gpu_layer_puts_asr_on_gpus_and_keeps_placement() -> None:
    app = load_serve_config(ROOT / "ray_config.yaml", [load_layer("gpu")]).applications[0]
    asr = app.options()["ASRModel"]
    # two replicas per GPU (README, GPU fifth pass), both from the start: a rollout replaces
    # one while the other serves, so no surge (it would wait for a free GPU for the new pair)
    assert asr["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0.5, "resources": {"asr": 1}}
    auto = asr["autoscaling_config"]
    assert auto["min_replicas"] == auto["initial_replicas"] == 2 <= auto["max_replicas"]
    assert "max_surge_percent" not in asr
    # the buffer the GPU capacity was measured with, over the CPU default; the rest of the
    # policy stays the file's
    base = load_serve_config(ROOT / "ray_config.yaml").applications[0].args["ingress"]["policy"]
    policy = app.args["ingress"]["policy"]
    assert (base["max_buffer_s"], policy["max_buffer_s"]) == (20.0, 15.0)
    assert {k: v for k, v in policy.items() if k != "max_buffer_s"} == {
        k: v for k, v in base.items() if k != "max_buffer_s"
    }
    # decodes share calls to the ASR replicas on GPUs only: on CPU a batch costs each row's
    # decode time, and streams gathered into one wait for each other (README, stop 28)
    base_ingress = load_serve_config(ROOT / "ray_config.yaml").applications[0].args["ingress"]
    assert base_ingress["decode_gather_s"] == 0.0 < app.args["ingress"]["decode_gather_s"] <= 0.02


@pytest.mark.parametrize(
    ("gpus", "replicas", "share"), [(1.0, 2, 0.5), (2.0, 4, 0.5), (0.5, 1, 0.5), (0.25, 1, 0.25)]
)
def test_local_gpus_start_the_layers_replicas_per_gpu(gpus: float, replicas: int, share: float) -> None:
    from deployments.local import gpu_replicas

    asr = gpu_replicas(gpus)
    assert asr["ray_actor_options"] == {"num_gpus": share}
    assert set(asr["autoscaling_config"].values()) == {replicas}


@pytest.mark.parametrize("layer", [None, "gpu", "local"])
def test_asr_batches_fit_what_serve_lets_in(layer: str | None) -> None:
    """A batch holds at most the requests Serve lets into the replica (max_ongoing_requests):
    the GPU layer once batched 64 rows behind a cap of 32.  On a GPU every batch size the
    layer allows replays CUDA graphs."""
    app = load_serve_config(ROOT / "ray_config.yaml", [load_layer(layer)] if layer else []).applications[0]
    asr = app.options()["ASRModel"]
    batch = BatchConfig.model_validate(asr["user_config"]).max_batch_size
    assert asr["max_ongoing_requests"] >= batch
    if asr["ray_actor_options"].get("num_gpus"):
        assert EngineConfig.model_validate(app.args["engine"]).graph_max_batch >= batch


def test_apply_layer_merges_by_name_and_removes_with_null() -> None:
    base = {
        "proxy_location": "EveryNode",
        "applications": [
            {"name": "a", "args": {"x": 1, "y": 2}, "deployments": [{"name": "D", "n": 1, "o": {"p": 1}}]}
        ],
    }
    layer = {
        "config": {"proxy_location": "HeadOnly"},
        "applications": {"a": {"args": {"y": 3}, "deployments": {"D": {"o": {"q": 2}, "n": None}}}},
    }
    out = apply_layer(base, layer)
    assert out == {
        "proxy_location": "HeadOnly",
        "applications": [
            {"name": "a", "args": {"x": 1, "y": 3}, "deployments": [{"name": "D", "o": {"p": 1, "q": 2}}]}
        ],
    }
    assert base["applications"][0]["deployments"][0]["n"] == 1  # the base is not modified


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"applications": {"other": {}}}, "other"),
        ({"applications": {"rayscribe": {"deployments": {"ASR": {"num_replicas": 2}}}}}, "ASR"),
    ],
)
def test_layer_naming_what_the_config_lacks_is_a_config_error(layer: dict[str, Any], message: str) -> None:
    raw = read_yaml(ROOT / "ray_config.yaml")
    with pytest.raises(ConfigError, match=message):
        apply_layer(raw, layer)


def test_unknown_layer_name_or_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shipped: cpu-bf16, gpu, local"):
        load_layer("tpu")
    bad = tmp_path / "bad.yaml"
    bad.write_text("deployments: {}\n")
    with pytest.raises(ConfigError, match="only `config` and `applications`"):
        load_layer(bad)


def test_the_shipped_config_fits_the_encoder_input_and_settles_words_everywhere() -> None:
    """The fitted encoder input and settling (once the fast-cpu layer) are the shipped default;
    no layer turns them off again."""
    from deployments.app import AppArgs

    def args(*layers: str) -> AppArgs:
        cfg = load_serve_config(ROOT / "ray_config.yaml", [load_layer(n) for n in layers])
        return AppArgs.model_validate(cfg.applications[0].args)

    for layers in ((), ("gpu",), ("local",), ("local", "cpu-bf16")):
        shipped = args(*layers)
        assert (shipped.engine.encode_pad_s, shipped.ingress.policy.settle_s) == (2.0, 4.0)
        assert shipped.engine.quantize == "int8"
        # the bfloat16 encoder under load; at any load only where a layer asks for it (its
        # cost: README, stops 24 and 27)
        assert shipped.engine.cpu_bf16_encoder == ("auto" if "cpu-bf16" in layers else "under_load")


def test_capacity_harness_takes_what_it_is_not_told_from_the_config_and_its_layers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the GPU benchmark scripts pass `--layer gpu`: the layer stays the one source of the GPU
    # buffer, batch size and wait, and CUDA graphs the replicas deploy with
    spec = importlib.util.spec_from_file_location("inproc_capacity", ROOT / "scripts/inproc_capacity.py")
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, harness)  # its dataclasses look themselves up there
    spec.loader.exec_module(harness)
    manifest = ["--manifest", "m.jsonl"]

    args, engine = harness.parse_args(manifest)
    assert (args.max_batch, args.batch_wait) == (8, 0.05)
    assert harness.served_policy(args).max_buffer_s == 20.0

    args, engine = harness.parse_args([*manifest, "--layer", "gpu", "--engine", '{"encode_pad_s": 5.0}'])
    assert (args.max_batch, args.batch_wait) == (128, 0.02)
    assert (engine.graph_max_batch, engine.encode_pad_s) == (128, 5.0)
    assert harness.served_policy(args).max_buffer_s == 15.0

    # the command line still wins over the layer
    args, _ = harness.parse_args(
        [*manifest, "--layer", "gpu", "--max-batch", "64", "--policy", '{"max_buffer_s": 18}']
    )
    assert args.max_batch == 64 and harness.served_policy(args).max_buffer_s == 18.0
    with pytest.raises(ConfigError, match="no layer 'tpu'"):
        harness.parse_args([*manifest, "--layer", "tpu"])


def test_bf16_encoder_reads_yaml_booleans_and_needs_a_gap_between_its_bounds(tmp_path: Path) -> None:
    """An unquoted ``off`` / ``on`` in a layer is a YAML boolean: it means the same word, not a
    type error; the under-load switch needs its off bound below its on bound."""
    from pydantic import ValidationError

    layer = tmp_path / "layer.yaml"
    for word in ("off", "on"):
        layer.write_text(
            f"applications:\n  rayscribe:\n    args:\n      engine:\n        cpu_bf16_encoder: {word}\n"
        )
        engine = load_layer(layer)["applications"]["rayscribe"]["args"]["engine"]
        assert isinstance(engine["cpu_bf16_encoder"], bool)
        assert EngineConfig.model_validate(engine).cpu_bf16_encoder == word
    with pytest.raises(ValidationError, match="cpu_bf16_encoder"):
        EngineConfig.model_validate({"cpu_bf16_encoder": "sometimes"})
    with pytest.raises(ValidationError, match="bf16_busy_off < bf16_busy_on"):
        EngineConfig(cpu_bf16_encoder="under_load", bf16_busy_on=0.5, bf16_busy_off=0.5)
