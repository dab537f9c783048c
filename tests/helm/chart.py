"""Helpers of the chart tier: paths, the values sets, rendering and object lookups."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

helm: ModuleType | None
try:
    import helm_python

    helm = helm_python
except ImportError:  # the k8s extra is missing, or not x86_64 Linux: conftest skips the tier
    helm = None

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rayscribe"
EXAMPLES = CHART / "examples"
# KubeRay CRD schemas (shared/k8s/SOURCES.md); RAYSCRIBE_K8S_SCHEMAS points elsewhere
K8S_SCHEMAS = Path(os.environ.get("RAYSCRIBE_K8S_SCHEMAS", ROOT.parent / "shared" / "k8s"))
RELEASE = "rayscribe"
NAMESPACE = "rayscribe"

# A release must say where its API keys are (the render fails otherwise, see test_chart_auth);
# the examples name this Secret, and values sets without an `auth` section get it.
KEYS_SECRET = "rayscribe-api-keys"
AUTH: dict[str, Any] = {"auth": {"existingSecret": KEYS_SECRET}}

# values set name -> values file (None: the chart's defaults plus AUTH)
VARIANTS: dict[str, Path | None] = {
    "default": None,
    "gpu": EXAMPLES / "values-gpu.yaml",
    "external-redis": EXAMPLES / "values-external-redis.yaml",
    "gcs-ft": EXAMPLES / "values-gcs-ft.yaml",
    "ha": EXAMPLES / "values-ha.yaml",
}

Obj = dict[str, Any]


def variant_values(name: str) -> Obj:
    path = VARIANTS[name]
    return dict(AUTH) if path is None else dict(yaml.safe_load(path.read_text()))


def with_auth(values: Obj) -> Obj:
    """``values`` with :data:`AUTH` unless they have an ``auth`` section of their own."""
    return values if "auth" in values else {**AUTH, **values}


def render_notes(chart: Any, values: Obj) -> str:
    manifests = chart.render(with_auth(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return str(next(text for path, text in manifests.items() if path.endswith("NOTES.txt")))


def render(chart: Any, values: Obj) -> list[Obj]:
    """Every object the chart renders with ``values`` (NOTES.txt and empty files dropped);
    values without an ``auth`` section get :data:`AUTH` (:func:`with_auth`)."""
    manifests = chart.render(with_auth(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[Obj] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def only(objects: list[Obj], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# auth.mode "off" (or YAML's bare off: false) adds this to the `serve` layer (_helpers.tpl)
AUTH_OFF_LAYER: Obj = {"applications": {"rayscribe": {"args": {"ingress": {"auth": {"mode": "off"}}}}}}


def chart_layers(values: Obj) -> list[Obj]:
    """The override layers the chart applies over ray_config.yaml, given merged ``values``:
    cluster/layers/gpu.yaml with GPU workers, the `serve` values, then the auth layer with
    auth.mode off."""
    from cluster.serve_config import load_layer

    gpu = [load_layer("gpu")] if values["asrWorkers"]["gpusPerPod"] > 0 else []
    off = values["auth"]["mode"] in ("off", False)
    return [*gpu, values["serve"], *([AUTH_OFF_LAYER] if off else [])]


def serve_config(objects: list[Obj]) -> Obj:
    return dict(yaml.safe_load(only(objects, "RayService")["spec"]["serveConfigV2"]))


def worker_group(rayservice: Obj, name: str) -> Obj:
    groups = {g["groupName"]: g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    return dict(groups[name])


def deployment(cfg: Obj, name: str) -> Obj:
    (app,) = cfg["applications"]
    return dict(next(d for d in app["deployments"] if d["name"] == name))


def matches(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels + In/NotIn/Exists expressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pod_templates(objects: list[Obj]) -> dict[str, Obj]:
    """Every pod template, named ``head``, ``worker/<group>`` or ``<kind>/<name>``."""
    out: dict[str, Obj] = {}
    for o in objects:
        if o["kind"] == "RayService":
            rc = o["spec"]["rayClusterConfig"]
            out["head"] = rc["headGroupSpec"]["template"]
            for g in rc["workerGroupSpecs"]:
                out[f"worker/{g['groupName']}"] = g["template"]
        elif o["kind"] in {"StatefulSet", "Deployment", "DaemonSet"}:
            out[f"{o['kind']}/{o['metadata']['name']}"] = o["spec"]["template"]
    return out
