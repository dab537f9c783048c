"""Build the rayscribe Serve application from typed arguments (``ray_config.yaml`` args)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict
from ray.serve import Application, Deployment

from cluster.serve_config import load_serve_config
from deployments.asr import ASRModel
from deployments.config import EngineConfig
from deployments.hooks import load_handler
from deployments.ingress import Ingress, IngressConfig
from ingest.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "ray_config.yaml"


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = EngineConfig()
    ingress: IngressConfig = IngressConfig()


def served_args(config_path: str | Path = DEFAULT_CONFIG) -> AppArgs:
    """The app's arguments in a Serve config file (``ray_config.yaml``): what a deploy serves."""
    return AppArgs.model_validate(load_serve_config(config_path).applications[0].args)


def build_app(args: AppArgs) -> Application:
    """``serve run`` / ``serve deploy`` entry point (``import_path`` in ``ray_config.yaml``);
    per-deployment options come from the config file's ``deployments`` section."""
    return compose(args)


def compose(
    args: dict[str, Any] | AppArgs | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    model: tuple[Deployment, tuple[Any, ...]] | None = None,
) -> Application:
    """Bind both deployments; ``options`` maps a deployment name to ``.options(...)`` overrides
    for callers that do not go through a Serve config file (the embedded local runner);
    ``model``: another deployment and its init args in the ASRModel's place, with its options
    (a stand-in that costs no CPU, for measuring the serving plane alone)."""
    a = args if isinstance(args, AppArgs) else AppArgs.model_validate(args or {})
    opts = options or {}
    # (Serve's decorator returns a Deployment; its typing says the class)
    deployment, init = model or (cast(Deployment, ASRModel), (a.engine.model_dump(),))
    asr = deployment.options(name="ASRModel", **opts.get("ASRModel", {})).bind(*init)
    # each utterance handler is a deployment of this app, named as its class
    hooks = {}
    for name, path in a.ingress.hooks.handlers.items():
        handler = load_handler(path)
        if not isinstance(handler, Deployment):
            raise ConfigError(f"hook handler {path!r} is not a Serve deployment (@serve.deployment)")
        hooks[name] = handler.options(**opts.get(handler.name, {})).bind()
    app: Application = Ingress.options(**opts.get("Ingress", {})).bind(  # type: ignore[attr-defined]
        asr, a.ingress.model_dump(), hooks
    )
    return app
