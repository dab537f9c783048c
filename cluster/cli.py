"""Operator commands for a rayscribe Ray cluster (``rayscribe-cluster``, ``python -m cluster``).

Thin wrappers over Ray's and Serve's own CLIs: each command builds argv lists (tested without
Ray) and runs them.  ``--dry-run`` prints them instead.

    rayscribe-cluster head [--ingress N] [--gcs-redis HOST:PORT]   # on the head machine
    rayscribe-cluster worker --address HEAD:6379 --asr 1 [--num-gpus 1] [--ingress 2]
    rayscribe-cluster render [--layer gpu]                          # the Serve config, layers applied
    rayscribe-cluster deploy --address HEAD [--layer gpu]           # serve deploy it
    rayscribe-cluster status --address HEAD                         # serve status + ray status
    rayscribe-cluster drain NODE_ID --address HEAD                  # move replicas off a node
    rayscribe-cluster down [--address HEAD]                         # (delete the app,) stop Ray here

What runs where: the head runs the GCS, the Serve controller and a proxy (``num-cpus 0``: no
replicas); a node with ``ingress`` slots runs ``Ingress`` replicas, one with ``asr`` slots
``ASRModel`` replicas (``ray_config.yaml`` places them by these custom resources); every node
runs a proxy on port 8000 (``proxy_location: EveryNode``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cluster.runtime import proxy_env
from cluster.serve_config import apply_layer, load_layer, read_yaml, validate
from ingest.errors import ConfigError

ROOT_CONFIG = Path(__file__).resolve().parent.parent / "ray_config.yaml"
GCS_PORT = 6379
DASHBOARD_PORT = 8265
DRAIN_REASON = "DRAIN_NODE_REASON_PREEMPTION"  # accepted on a busy node (IDLE_TERMINATION is not)


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the caller's environment

    def shell(self) -> str:
        env = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join([*env, shlex.join(self.argv)])


def tool(name: str) -> str:
    """``ray`` / ``serve`` next to this Python (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def gcs_address(address: str) -> str:
    return address if ":" in address else f"{address}:{GCS_PORT}"


def dashboard_address(address: str) -> str:
    """The head's dashboard (Serve's REST API) from ``HOST`` or ``HOST:6379``."""
    if address.startswith("http://") or address.startswith("https://"):
        return address
    return f"http://{address.split(':')[0]}:{DASHBOARD_PORT}"


def resources_arg(slots: dict[str, float]) -> list[str]:
    wanted = {k: v for k, v in slots.items() if v > 0}
    return ["--resources", json.dumps(wanted, sort_keys=True)] if wanted else []


@dataclass(frozen=True)
class HeadSpec:
    port: int = GCS_PORT
    dashboard_port: int = DASHBOARD_PORT
    num_cpus: int = 0  # the head keeps the control plane only, no replicas
    ingress: int = 0  # ingress slots on the head (a one-machine cluster)
    asr: int = 0
    gcs_redis: str | None = None  # HOST:PORT of a Redis for GCS fault tolerance
    temp_dir: str | None = None
    metrics_port: int | None = None


def head_command(spec: HeadSpec) -> Command:
    argv = [
        tool("ray"), "start", "--head",
        "--port", str(spec.port),
        "--num-cpus", str(spec.num_cpus),
        "--dashboard-host", "0.0.0.0",
        "--dashboard-port", str(spec.dashboard_port),
        *resources_arg({"ingress": spec.ingress, "asr": spec.asr}),
    ]  # fmt: skip
    if spec.metrics_port is not None:
        argv += ["--metrics-export-port", str(spec.metrics_port)]
    if spec.temp_dir:
        argv += ["--temp-dir", spec.temp_dir]
    # GCS fault tolerance: the GCS keeps its tables in this Redis, so a restarted head takes
    # the cluster (and Serve's controller state) back instead of starting empty
    env = {"RAY_REDIS_ADDRESS": spec.gcs_redis} if spec.gcs_redis else {}
    return Command(argv, {**env, **node_proxy_env()})


@dataclass(frozen=True)
class WorkerSpec:
    address: str
    asr: int = 0
    ingress: int = 0
    num_gpus: float | None = None
    num_cpus: int | None = None  # default: Ray counts the machine's cores
    temp_dir: str | None = None


def worker_command(spec: WorkerSpec) -> Command:
    if spec.asr <= 0 and spec.ingress <= 0:
        raise ConfigError("a worker needs --asr N or --ingress N slots: nothing would run on it")
    argv = [
        tool("ray"), "start", "--address", gcs_address(spec.address),
        *resources_arg({"asr": spec.asr, "ingress": spec.ingress}),
    ]  # fmt: skip
    if spec.num_gpus is not None:
        argv += ["--num-gpus", f"{spec.num_gpus:g}"]
    if spec.num_cpus is not None:
        argv += ["--num-cpus", str(spec.num_cpus)]
    if spec.temp_dir:
        argv += ["--temp-dir", spec.temp_dir]
    return Command(argv, node_proxy_env())


def node_proxy_env(config: Path = ROOT_CONFIG) -> dict[str, str]:
    """Every node runs a Serve proxy (``proxy_location: EveryNode``): it paces WebSocket audio
    at the ingress limits of ``config`` (:func:`cluster.runtime.proxy_env`)."""
    args = read_yaml(config)["applications"][0].get("args", {})
    return proxy_env(args.get("ingress", {}).get("limits", {}))


def render(config: Path = ROOT_CONFIG, layers: Sequence[str] = ()) -> str:
    """The Serve config with ``layers`` applied, checked, as YAML."""
    raw = read_yaml(config)
    for name in layers:
        raw = apply_layer(raw, load_layer(name))
    validate(raw, str(config))
    return yaml.safe_dump(raw, sort_keys=False)


def deploy_command(config_file: Path, address: str) -> Command:
    return Command([tool("serve"), "deploy", str(config_file), "--address", dashboard_address(address)])


def status_commands(address: str) -> list[Command]:
    return [
        Command([tool("serve"), "status", "--address", dashboard_address(address)]),
        Command([tool("ray"), "status", "--address", gcs_address(address)]),
    ]


def drain_command(node_id: str, address: str, deadline_s: int | None = None) -> Command:
    """``ray drain-node`` (Ray 2.60, a developer command): the GCS marks the node draining,
    nothing new is scheduled there, and Serve starts replacements for its replicas on other
    nodes before stopping the old ones.  Streams on a stopped Ingress replica are cut after
    its graceful_shutdown_timeout_s and resume on another one (finals persisted in Redis);
    decodes on a stopped ASR replica finish first, later ones go to the new replicas."""
    argv = [
        tool("ray"), "drain-node",
        "--address", gcs_address(address),
        "--node-id", node_id,
        "--reason", DRAIN_REASON,
        "--reason-message", "rayscribe-cluster drain",
    ]  # fmt: skip
    if deadline_s is not None:
        argv += ["--deadline-remaining-seconds", str(deadline_s)]
    return Command(argv)


def down_commands(address: str | None) -> list[Command]:
    cmds = []
    if address:  # delete the Serve apps first: their replicas stop gracefully
        cmds.append(Command([tool("serve"), "shutdown", "--yes", "--address", dashboard_address(address)]))
    cmds.append(Command([tool("ray"), "stop"]))  # this machine's Ray processes only
    return cmds


def run(commands: Sequence[Command], dry_run: bool) -> int:
    for c in commands:
        if dry_run:
            print(c.shell())
            continue
        done = subprocess.run(c.argv, env={**os.environ, **c.env}, check=False)
        if done.returncode != 0:
            return done.returncode
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rayscribe-cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    sub = p.add_subparsers(dest="command", required=True)

    h = sub.add_parser("head", help="start the Ray head (GCS, Serve controller, a proxy)")
    h.add_argument("--port", type=int, default=GCS_PORT)
    h.add_argument("--dashboard-port", type=int, default=DASHBOARD_PORT)
    h.add_argument("--num-cpus", type=int, default=0, help="0: no replicas on the head")
    h.add_argument("--ingress", type=int, default=0, help="Ingress slots on the head")
    h.add_argument("--asr", type=int, default=0, help="ASR slots on the head")
    h.add_argument("--gcs-redis", help="HOST:PORT of a Redis for GCS fault tolerance")
    h.add_argument("--temp-dir")
    h.add_argument("--metrics-port", type=int)

    w = sub.add_parser("worker", help="join a worker with ASR and/or ingress slots")
    w.add_argument("--address", required=True, help="the head, HOST:6379")
    w.add_argument("--asr", type=int, default=0, help="ASRModel replicas this node may hold")
    w.add_argument("--ingress", type=int, default=0, help="Ingress replicas this node may hold")
    w.add_argument("--num-gpus", type=float)
    w.add_argument("--num-cpus", type=int)
    w.add_argument("--temp-dir")

    for name, text in (("render", "print the Serve config"), ("deploy", "serve deploy the config")):
        r = sub.add_parser(name, help=f"{text} with override layers applied")
        r.add_argument("--config", type=Path, default=ROOT_CONFIG)
        r.add_argument("--layer", action="append", default=[], help="cluster/layers/NAME.yaml or a file")
        if name == "deploy":
            r.add_argument("--address", required=True, help="the head: HOST, HOST:6379 or http://HOST:8265")

    s = sub.add_parser("status", help="serve status and the cluster's nodes and resources")
    s.add_argument("--address", required=True)

    d = sub.add_parser("drain", help="move replicas off a node before it goes (ray drain-node)")
    d.add_argument("node_id")
    d.add_argument("--address", required=True)
    d.add_argument("--deadline-s", type=int, help="the node will be force-stopped after this")

    x = sub.add_parser("down", help="delete the Serve app (with --address) and stop Ray on this machine")
    x.add_argument("--address")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        return _dispatch(a)
    except ConfigError as e:
        print(f"rayscribe-cluster: {e.message}", file=sys.stderr)
        return 2


def _dispatch(a: argparse.Namespace) -> int:
    if a.command == "head":
        spec = HeadSpec(
            a.port, a.dashboard_port, a.num_cpus, a.ingress, a.asr, a.gcs_redis, a.temp_dir, a.metrics_port
        )
        return run([head_command(spec)], a.dry_run)
    if a.command == "worker":
        w = WorkerSpec(a.address, a.asr, a.ingress, a.num_gpus, a.num_cpus, a.temp_dir)
        return run([worker_command(w)], a.dry_run)
    if a.command == "render":
        print(render(a.config, a.layer), end="")
        return 0
    if a.command == "deploy":
        text = render(a.config, a.layer)
        with tempfile.NamedTemporaryFile("w", prefix="rayscribe-serve-", suffix=".yaml", delete=False) as f:
            f.write(text)
        try:
            return run([deploy_command(Path(f.name), a.address)], a.dry_run)
        finally:
            if not a.dry_run:
                os.unlink(f.name)
    if a.command == "status":
        return run(status_commands(a.address), a.dry_run)
    if a.command == "drain":
        return run([drain_command(a.node_id, a.address, a.deadline_s)], a.dry_run)
    return run(down_commands(a.address), a.dry_run)
