"""Read ``ray_config.yaml`` (a Serve config file) into typed pieces, and apply override layers.

``ray_config.yaml`` is the one config: the cluster config (``serve deploy``).  A *layer* is a
small override in the shape of the Helm chart's ``serve:`` values::

    config: {<top-level Serve keys>}                 # proxy_location, http_options, ...
    applications:
      <app name>:                                    # keys merged over that application
        deployments:
          <deployment name>: {<deployment keys>}     # merged over that deployment

Maps merge, scalars and lists replace, ``null`` removes a key; a name the base config does not
have is a :class:`ConfigError` (the chart fails its render on the same mistake).  The shipped
layers live in ``cluster/layers/`` (``gpu``, ``local``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ingest.errors import ConfigError

DEPLOYMENT_OPTION_KEYS = {
    "num_replicas",
    "max_ongoing_requests",
    "max_queued_requests",
    "autoscaling_config",
    "ray_actor_options",
    "user_config",
    "health_check_period_s",
    "health_check_timeout_s",
    "graceful_shutdown_timeout_s",
    "graceful_shutdown_wait_loop_s",
    "max_surge_percent",
}


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = "rayscribe"
    route_prefix: str = "/"
    import_path: str
    args: dict[str, Any] = Field(default_factory=dict)
    deployments: list[dict[str, Any]] = Field(default_factory=list)

    def options(self) -> dict[str, dict[str, Any]]:
        """Per-deployment ``.options()`` overrides keyed by deployment name."""
        out: dict[str, dict[str, Any]] = {}
        for d in self.deployments:
            unknown = set(d) - DEPLOYMENT_OPTION_KEYS - {"name"}
            if unknown:
                raise ConfigError(f"deployment {d.get('name')!r}: unsupported keys {sorted(unknown)}")
            out[str(d["name"])] = {k: v for k, v in d.items() if k != "name"}
        return out


LAYERS_DIR = Path(__file__).resolve().parent / "layers"


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    host: str = "127.0.0.1"
    port: int = 8000


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    proxy_location: str = "EveryNode"
    http_options: HttpOptions = HttpOptions()
    applications: list[AppConfig]


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


def validate(raw: dict[str, Any], source: str = "config") -> ServeConfig:
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source} is not a valid Serve config: {e}") from e


def load_serve_config(path: str | Path, layers: Sequence[dict[str, Any]] = ()) -> ServeConfig:
    """The Serve config at ``path`` with ``layers`` applied in order."""
    raw = read_yaml(path)
    for layer in layers:
        raw = apply_layer(raw, layer)
    return validate(raw, str(path))


def load_layer(name_or_path: str | Path) -> dict[str, Any]:
    """A shipped layer by name (``gpu`` -> ``cluster/layers/gpu.yaml``) or a layer file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = LAYERS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in LAYERS_DIR.glob("*.yaml"))
            raise ConfigError(f"no layer {name_or_path!r} (shipped: {', '.join(shipped)})")
    layer = read_yaml(path)
    unknown = set(layer) - {"config", "applications"}
    if unknown:
        raise ConfigError(f"{path}: a layer has only `config` and `applications`, not {sorted(unknown)}")
    return layer


def apply_layer(config: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a Serve config dict) with ``layer`` merged over it (module docstring);
    the same merge the chart's ``rayscribe.serveConfig`` template does.  Returns a new dict."""
    out = merge(config, layer.get("config") or {})
    app_layers: dict[str, Any] = dict(layer.get("applications") or {})
    apps = [a for a in config.get("applications") or [] if isinstance(a, dict)]
    missing = set(app_layers) - {a.get("name") for a in apps}
    if missing:
        raise ConfigError(f"layer names applications {sorted(missing)} the config does not have")
    out_apps = []
    for app in apps:
        app_layer = dict(app_layers.get(str(app.get("name")), {}))
        dep_layers: dict[str, Any] = dict(app_layer.pop("deployments", None) or {})
        deps = app.get("deployments") or []
        unknown = set(dep_layers) - {d.get("name") for d in deps}
        if unknown:
            raise ConfigError(f"layer names deployments {sorted(unknown)} app {app.get('name')!r} lacks")
        new_app = merge(app, app_layer)
        new_app["deployments"] = [merge(d, dep_layers.get(d["name"], {})) for d in deps]
        out_apps.append(new_app)
    out["applications"] = out_apps
    return out


def deployment_layer(app: str, deployments: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A layer that changes only deployments of ``app`` (for callers holding per-deployment
    overrides, such as the e2e tier)."""
    return {"applications": {app: {"deployments": deployments}}}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins; an override of ``None`` removes the key."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
