"""Read ``ray_config.yaml`` (a Serve config file) into typed pieces."""

from __future__ import annotations

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


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    host: str = "127.0.0.1"
    port: int = 8000


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    http_options: HttpOptions = HttpOptions()
    applications: list[AppConfig]


def load_serve_config(path: str | Path) -> ServeConfig:
    try:
        raw = yaml.safe_load(Path(path).read_text())
        return ServeConfig.model_validate(raw)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    except (yaml.YAMLError, ValidationError) as e:
        raise ConfigError(f"{path} is not a valid Serve config: {e}") from e


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins; an override of ``None`` removes the key."""
    out = dict(base)
    for k, v in override.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
