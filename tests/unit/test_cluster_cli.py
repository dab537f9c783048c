"""The operator CLI builds the right Ray / Serve command lines (nothing is run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cluster import cli
from cluster.cli import HeadSpec, WorkerSpec
from deployments.app import served_args
from ingest.errors import ConfigError


def after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_head_keeps_replicas_off_and_turns_on_gcs_fault_tolerance() -> None:
    c = cli.head_command(HeadSpec(gcs_redis="10.0.0.5:6380", temp_dir="/tmp/ray-x"))
    assert c.argv[1:3] == ["start", "--head"]
    assert after(c.argv, "--num-cpus") == "0" and after(c.argv, "--port") == "6379"
    assert after(c.argv, "--dashboard-host") == "0.0.0.0" and after(c.argv, "--temp-dir") == "/tmp/ray-x"
    assert "--resources" not in c.argv  # no slots on the head by default
    assert c.env["RAY_REDIS_ADDRESS"] == "10.0.0.5:6380"
    # its Serve proxy paces WebSocket audio at ray_config.yaml's ingress limits
    assert c.env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "deployments.proxy_guard:middlewares"
    limits = served_args().ingress.limits
    assert json.loads(c.env["RAYSCRIBE_PROXY_PACE"]) == {
        "max_speed": limits.max_speed,
        "max_lead_s": limits.max_lead_s,
    }
    assert "RAY_REDIS_ADDRESS" not in cli.head_command(HeadSpec()).env


def test_one_machine_head_advertises_both_roles() -> None:
    c = cli.head_command(HeadSpec(num_cpus=4, ingress=2, asr=1))
    assert json.loads(after(c.argv, "--resources")) == {"asr": 1, "ingress": 2}


def test_worker_advertises_its_slots_and_gpus() -> None:
    c = cli.worker_command(WorkerSpec("10.0.0.1", asr=1, num_gpus=1))
    assert c.argv[1:4] == ["start", "--address", "10.0.0.1:6379"]
    assert json.loads(after(c.argv, "--resources")) == {"asr": 1}
    assert after(c.argv, "--num-gpus") == "1" and "--num-cpus" not in c.argv
    mixed = cli.worker_command(WorkerSpec("h:7000", asr=1, ingress=2, num_cpus=8))
    assert after(mixed.argv, "--address") == "h:7000"
    assert json.loads(after(mixed.argv, "--resources")) == {"asr": 1, "ingress": 2}
    with pytest.raises(ConfigError, match="--asr N or --ingress N"):
        cli.worker_command(WorkerSpec("h"))


@pytest.mark.parametrize(
    ("address", "dashboard", "gcs"),
    [
        ("10.0.0.1", "http://10.0.0.1:8265", "10.0.0.1:6379"),
        ("10.0.0.1:6379", "http://10.0.0.1:8265", "10.0.0.1:6379"),
        ("http://head:9000", "http://head:9000", None),
    ],
)
def test_addresses(address: str, dashboard: str, gcs: str | None) -> None:
    assert cli.dashboard_address(address) == dashboard
    if gcs:
        assert cli.gcs_address(address) == gcs


def test_deploy_status_drain_down() -> None:
    d = cli.deploy_command(Path("/tmp/c.yaml"), "head")
    assert d.argv[1:] == ["deploy", "/tmp/c.yaml", "--address", "http://head:8265"]
    serve_status, ray_status = cli.status_commands("head")
    assert serve_status.argv[1:] == ["status", "--address", "http://head:8265"]
    assert ray_status.argv[1:] == ["status", "--address", "head:6379"]
    drain = cli.drain_command("ab12", "head", deadline_s=60)
    assert drain.argv[1] == "drain-node" and after(drain.argv, "--node-id") == "ab12"
    assert after(drain.argv, "--reason") == "DRAIN_NODE_REASON_PREEMPTION"
    assert after(drain.argv, "--deadline-remaining-seconds") == "60"
    assert [c.argv[1] for c in cli.down_commands("head")] == ["shutdown", "stop"]
    assert [c.argv[1:] for c in cli.down_commands(None)] == [["stop"]]  # never --force


def test_render_applies_layers_in_order() -> None:
    cfg = yaml.safe_load(cli.render(layers=["gpu", "local"]))
    assert cfg["proxy_location"] == "HeadOnly"
    (app,) = cfg["applications"]
    asr = next(d for d in app["deployments"] if d["name"] == "ASRModel")
    assert asr["ray_actor_options"]["num_gpus"] == 0.5 and asr["ray_actor_options"]["resources"] == {"asr": 1}
    assert yaml.safe_load(cli.render())["proxy_location"] == "EveryNode"


def test_main_dry_run_prints_and_bad_layer_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--dry-run", "worker", "--address", "h", "--ingress", "2"]) == 0
    out = capsys.readouterr().out
    assert "start --address h:6379 --resources '{\"ingress\": 2}'" in out
    assert cli.main(["render", "--layer", "tpu"]) == 2
    assert "no layer 'tpu'" in capsys.readouterr().err
