from __future__ import annotations

from pathlib import Path

import pytest

from cluster.serve_config import load_serve_config, merge
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
