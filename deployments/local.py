"""Embedded local default: start Ray, run the app from ``ray_config.yaml``, optionally stream.

python -m deployments.local serve            # serve until Ctrl-C
python -m deployments.local demo [WAV]       # serve, stream the sample live, stop

The cluster config is adapted to one machine by the ``local`` layer (cluster/layers/local.yaml:
HeadOnly on 127.0.0.1), then any ``--layer``; Ray starts with the ``asr`` and ``ingress``
resources the config places replicas by.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Deployment

from cluster.redis_server import EmbeddedRedis
from cluster.runtime import init_local_ray, metrics_url, proxy_env
from cluster.serve_config import deployment_layer, load_layer, load_serve_config, merge, read_yaml
from deployments.app import DEFAULT_CONFIG, AppArgs, compose
from deployments.ingress import STREAM_PATH
from deployments.store import REDIS_URL_ENV
from ingest.cli import SAMPLE_WAV, stream_main

LOCAL_LAYER = "local"
Layer = str | Path | dict[str, Any]  # a shipped layer's name, a layer file, or the layer itself


def fit_replicas(asr: dict[str, Any], cpus: int) -> dict[str, Any]:
    """Cap the ASR autoscaling range to the replicas this one machine can place, so the local
    default never waits on replicas that cannot start."""
    auto = asr.get("autoscaling_config")
    per_replica = float(asr.get("ray_actor_options", {}).get("num_cpus", 1) or 0)
    if not auto or per_replica <= 0:
        return asr
    fit = max(1, int(cpus // per_replica))
    capped = {k: min(int(v), fit) for k, v in auto.items() if k.endswith("_replicas")}
    return merge(asr, {"autoscaling_config": capped})


def gpu_replicas(gpus: float) -> dict[str, Any]:
    """The ASR replicas that ``gpus`` GPUs hold at the gpu layer's share per replica (two per
    GPU: README, GPU fifth pass), all started at once; the local layer's replica per core is
    for CPU replicas.  Less than one replica's share: one replica on what there is."""
    asr = load_layer("gpu")["applications"]["rayscribe"]["deployments"]["ASRModel"]
    share = float(asr["ray_actor_options"]["num_gpus"])
    n = max(1, int(gpus / share + 1e-9))
    fixed = {"min_replicas": n, "initial_replicas": n, "max_replicas": n}
    return {"ray_actor_options": {"num_gpus": min(share, gpus)}, "autoscaling_config": fixed}


def start_local(
    config_path: Path = DEFAULT_CONFIG,
    port: int | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    args_override: dict[str, Any] | None = None,
    num_cpus: int | None = None,
    redis_url: str | None = None,
    metrics_port: int | None = None,
    layers: Sequence[Layer] = (),
    model: tuple[Deployment, tuple[Any, ...]] | None = None,
    object_store_mb: int = 256,
) -> str:
    """Start local Ray + Serve with the app of ``config_path``; return the stream URL.
    The ``local`` layer, then ``layers``, then ``overrides`` (per deployment name) apply over
    the file.  ``redis_url`` points the session store at a server (else the config's, or the env's);
    ``model``: a deployment (and its init args) in the ASRModel's place (``compose``);
    ``object_store_mb``: Ray's object store, which holds every decode request's audio window."""
    stack = [load_layer(LOCAL_LAYER), *(x if isinstance(x, dict) else load_layer(x) for x in layers)]
    if overrides:
        app_name = str(read_yaml(config_path)["applications"][0].get("name", "rayscribe"))
        stack.append(deployment_layer(app_name, overrides))
    cfg = load_serve_config(config_path, stack)
    app_cfg = cfg.applications[0]
    options = app_cfg.options()
    cpus = num_cpus or os.cpu_count() or 2
    options["ASRModel"] = fit_replicas(options.get("ASRModel", {}), cpus)
    args = merge(app_cfg.args, args_override or {})
    if redis_url:
        args = merge(args, {"ingress": {"store": {"url": redis_url}}})
    # the proxies Ray starts inherit this process's environment: pace their WebSockets
    limits = AppArgs.model_validate(args).ingress.limits
    os.environ.update(proxy_env({"max_speed": limits.max_speed, "max_lead_s": limits.max_lead_s}))
    init_local_ray(cpus, object_store_mb=object_store_mb, metrics_export_port=metrics_port)
    host, port = cfg.http_options.host, port or cfg.http_options.port
    serve.start(proxy_location=cfg.proxy_location, http_options={"host": host, "port": port})
    app = compose(args, options, model)
    serve.run(app, name=app_cfg.name, route_prefix=app_cfg.route_prefix)
    return f"ws://{host}:{port}{STREAM_PATH}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.local", description=__doc__)
    parser.add_argument("command", choices=["serve", "demo"])
    parser.add_argument("wav", nargs="?", type=Path, default=SAMPLE_WAV)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--fast", action="store_true", help="demo: stream faster than real time")
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default: free)")
    parser.add_argument(
        "--gpus", type=float, default=0.0, help="GPUs to run ASR on (the gpu layer: its replicas per GPU)"
    )
    parser.add_argument(
        "--object-store-mb",
        type=int,
        default=256,
        help="Ray's object store (each decode's audio window passes through it: ~1 MB per request in flight)",
    )
    parser.add_argument(
        "--layer", action="append", default=[], help="override layer: a name in cluster/layers/ or a file"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print("starting local Ray + Serve (first start takes ~30 s)...", flush=True)
    layers: list[Layer] = list(args.layer)
    if args.gpus:  # the gpu layer, with as many replicas as its GPU share fits on these GPUs
        layers += ["gpu", deployment_layer("rayscribe", {"ASRModel": gpu_replicas(args.gpus)})]
    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get(REDIS_URL_ENV)
        if not redis_url:  # the embedded default runs its own Redis, stopped on exit
            redis_url = stack.enter_context(EmbeddedRedis()).url
            print(f"session store: embedded redis-server at {redis_url}", flush=True)
        url = start_local(
            args.config,
            args.port,
            redis_url=redis_url,
            metrics_port=args.metrics_port,
            layers=layers,
            object_store_mb=args.object_store_mb,
        )
        stack.callback(serve.shutdown)
        print(
            f"rayscribe is serving at {url} (auth off: loopback only, cluster/layers/local.yaml)", flush=True
        )
        print(f"Prometheus metrics at {metrics_url()}", flush=True)
        if args.command == "demo":
            result = stream_main(url, args.wav, args.fast, interim=True)
            print(f"\nTranscript: {result.text}")
            return 0 if result.error is None else 1
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
