"""API keys in the chart: the hashed-keys Secret (the chart's own from auth.keys, or an existing
one) mounted read-only where the Ingress replicas run, auth.mode off through the serve layer,
and no render at all for an install that would refuse every stream."""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deployments.app import AppArgs
from deployments.auth import hash_key, new_key, parse_entries
from tests.helm.chart import (
    KEYS_SECRET,
    VARIANTS,
    Obj,
    deployment,
    helm,
    only,
    pod_templates,
    render,
    render_notes,
    serve_config,
    worker_group,
)
from tests.helm.test_chart_manifests import KUBE_VERSION, custom_resources
from tests.helm.test_chart_serve_config import apply_overrides

MOUNT_DIR = "/etc/rayscribe"
KEYS_FILE = f"{MOUNT_DIR}/api-keys"
HASH = "0" * 64
RAW = {"team-a": new_key(), "team-b": new_key()}
KEYS = [{"id": key_id, "sha256": hash_key(key)} for key_id, key in RAW.items()]


def container(tpl: Obj) -> Obj:
    (c,) = tpl["spec"]["containers"]
    return dict(c)


def secrets(objects: list[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}


def key_mounts(objects: list[Obj]) -> dict[str, tuple[Obj, Obj]]:
    """Pod template name -> (its api-keys volume, the container's mount of it)."""
    out = {}
    for name, tpl in pod_templates(objects).items():
        volumes = {v["name"]: v for v in tpl["spec"].get("volumes", [])}
        for m in container(tpl).get("volumeMounts", []):
            if m["mountPath"] == MOUNT_DIR:
                out[name] = (volumes[m["name"]], m)
    return out


def app_auth(objects: list[Obj]) -> Any:
    (app,) = serve_config(objects)["applications"]
    return AppArgs.model_validate(app["args"]).ingress.auth


def test_keys_render_a_secret_of_hashes_only(chart: Any) -> None:
    objects = render(chart, {"auth": {"keys": KEYS}})
    secret = secrets(objects)["rayscribe-api-keys"]
    kubernetes_validate.validate(secret, KUBE_VERSION, strict=True)
    text = base64.b64decode(secret["data"]["api-keys"]).decode()
    # exactly the lines the app reads: {sha256: key_id}
    assert parse_entries(text, "secret") == {hash_key(k): key_id for key_id, k in RAW.items()}
    dump = json.dumps(objects)
    assert not any(k in dump for k in RAW.values())  # the chart never sees a raw key
    ((volume, _),) = key_mounts(objects).values()
    assert volume["secret"]["secretName"] == "rayscribe-api-keys"
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": "api-keys"}]


@pytest.mark.parametrize("variant", VARIANTS)
def test_keys_are_mounted_read_only_in_the_ingress_workers_only(
    rendered: dict[str, list[Obj]], ray_config: Obj, variant: str
) -> None:
    objects = rendered[variant]
    mounts = key_mounts(objects)
    assert set(mounts) == {"worker/ingress"}  # not the head, not the ASR workers
    volume, mount = mounts["worker/ingress"]
    assert mount["readOnly"] is True
    # no subPath: kubelet updates a whole-directory Secret mount in place (rotation)
    assert "subPath" not in mount
    assert volume["secret"]["secretName"] == KEYS_SECRET
    (item,) = volume["secret"]["items"]
    assert f"{mount['mountPath']}/{item['path']}" == KEYS_FILE
    assert volume["secret"]["defaultMode"] == 0o444
    # the file the app reads is the file the chart mounts
    (app,) = ray_config["applications"]
    assert app["args"]["ingress"]["auth"]["keys_file"] == KEYS_FILE
    assert app_auth(objects).keys_file == KEYS_FILE and app_auth(objects).mode == "api_key"


@pytest.mark.parametrize("variant", VARIANTS)
def test_ingress_replicas_run_only_where_the_keys_are(rendered: dict[str, list[Obj]], variant: str) -> None:
    """Serve places the Ingress only on nodes advertising `ingress` with a free CPU."""
    objects = rendered[variant]
    rs = only(objects, "RayService")
    ingress = deployment(serve_config(objects), "Ingress")["ray_actor_options"]
    assert ingress["resources"] == {"ingress": 1} and ingress["num_cpus"] >= 1
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0" and "resources" not in head
    assert "ingress" not in custom_resources(worker_group(rs, "asr"))
    assert custom_resources(worker_group(rs, "ingress"))["ingress"] >= 1
    assert "worker/ingress" in key_mounts(objects)


def test_existing_secret_is_mounted_and_none_rendered(chart: Any) -> None:
    objects = render(chart, {"auth": {"existingSecret": "team-keys", "existingSecretKey": "lines"}})
    assert set(secrets(objects)) == {"rayscribe-redis"}  # the Redis password only
    ((volume, mount),) = key_mounts(objects).values()
    assert volume["secret"]["secretName"] == "team-keys"
    assert volume["secret"]["items"] == [{"key": "lines", "path": "api-keys"}]
    assert mount["readOnly"] is True


@pytest.mark.parametrize("mode", ["off", False])  # False: what YAML makes of a bare `mode: off`
def test_mode_off_reaches_serve_config_through_the_serve_layer(
    chart: Any, ray_config: Obj, mode: object
) -> None:
    values: Obj = {"auth": {"mode": mode}}
    objects = render(chart, values)
    assert serve_config(objects) == apply_overrides(ray_config, chart.merge_values(values))
    assert app_auth(objects).mode == "off"
    # quoted, so YAML 1.1 readers (PyYAML in Ray) get the string, not false
    assert 'mode: "off"' in only(objects, "RayService")["spec"]["serveConfigV2"]
    assert not key_mounts(objects) and "rayscribe-api-keys" not in secrets(objects)
    assert "trusted network" in render_notes(chart, values)


def test_mode_off_keeps_configured_keys_mounted(chart: Any) -> None:
    """Switching mode then changes serveConfigV2 only (in place), not the Ray cluster."""
    on = render(chart, {"auth": {"keys": KEYS}})
    off = render(chart, {"auth": {"keys": KEYS, "mode": "off"}})
    assert app_auth(off).mode == "off"
    cluster = [only(o, "RayService")["spec"]["rayClusterConfig"] for o in (on, off)]
    assert cluster[0] == cluster[1]


def test_notes_tell_clients_to_send_a_key(chart: Any) -> None:
    notes = render_notes(chart, {})
    assert "--api-key KEY" in notes and KEYS_SECRET in notes and KEYS_FILE in notes


def test_chart_ships_no_keys_and_auth_on(chart: Any) -> None:
    auth = chart.values["auth"]
    assert auth == {"mode": "api_key", "existingSecret": "", "existingSecretKey": "api-keys", "keys": []}


@pytest.mark.parametrize(
    ("auth", "where"),
    [
        ({"keys": [{"id": "a", "sha256": HASH[:63]}]}, "/auth/keys/0/sha256"),
        ({"keys": [{"id": "a", "sha256": HASH.upper().replace("0", "A")}]}, "/auth/keys/0/sha256"),
        ({"keys": [{"id": "a", "sha256": new_key()}]}, "/auth/keys/0/sha256"),  # a raw key pasted
        ({"keys": [{"id": "team a", "sha256": HASH}]}, "/auth/keys/0/id"),
        ({"keys": [{"id": "a#b", "sha256": HASH}]}, "/auth/keys/0/id"),
        ({"keys": [{"id": "a", "sha256": HASH, "key": "rsk_x"}]}, "additional properties 'key'"),
        ({"keys": [{"id": "a"}]}, "/auth/keys/0"),
        ({"password": "x"}, "additional properties 'password'"),
        ({"mode": "none"}, "/auth/mode"),
        ({"mode": True}, "/auth/mode"),
        ({"existingSecret": "Team_Keys"}, "/auth/existingSecret"),
    ],
)
def test_schema_rejects_bad_auth_values(chart: Any, auth: Obj, where: str) -> None:
    assert helm is not None
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.render({"auth": auth}, name="rayscribe", namespace="rayscribe")


@pytest.mark.parametrize("values", [{}, {"auth": {}}, {"auth": {"mode": "api_key", "keys": []}}])
def test_render_fails_without_keys(chart: Any, values: Obj) -> None:
    """An install that refuses every stream (4401) is a misconfiguration: no render."""
    assert helm is not None
    with pytest.raises(helm.HelmRenderError, match="no API keys, so every stream would be refused"):
        chart.render(values, name="rayscribe", namespace="rayscribe")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"auth": {"existingSecret": "x", "keys": KEYS}}, "not both"),
        ({"auth": {"keys": [KEYS[0], {**KEYS[0], "id": "other"}]}}, "listed twice"),
        (
            {"serve": {"applications": {"rayscribe": {"args": {"ingress": {"auth": {"mode": "off"}}}}}}},
            "set auth.mode instead",
        ),
        (
            {"serve": {"applications": {"rayscribe": {"args": {"ingress": {"auth": {"keys_file": "/k"}}}}}}},
            f"keys_file is /k but the chart mounts the keys at {KEYS_FILE}",
        ),
    ],
)
def test_auth_setups_that_cannot_work_fail_the_render(chart: Any, values: Obj, message: str) -> None:
    assert helm is not None
    with pytest.raises(helm.HelmRenderError, match=message):
        render(chart, values)


def test_examples_name_the_documented_secret() -> None:
    for path in VARIANTS.values():
        if path is not None:
            assert yaml.safe_load(path.read_text())["auth"] == {"existingSecret": KEYS_SECRET}, path
