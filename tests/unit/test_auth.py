"""API keys: hashed storage, the three ways to present a key, rotation without restart, Origin."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from deployments.auth import (
    APP_SUBPROTOCOL,
    AuthConfig,
    KeyRing,
    accepted_subprotocol,
    check_origin,
    hash_key,
    main,
    new_key,
)
from ingest.errors import ConfigError, Forbidden, Unauthorized

KEY_A, KEY_B = new_key(), new_key()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def ring(tmp_path: Path, *lines: str, clock: Clock | None = None, **cfg: object) -> KeyRing:
    f = tmp_path / "keys"
    f.write_text("\n".join(lines) + "\n")
    config = AuthConfig.model_validate({"keys_file": str(f), "keys_env": "RS_TEST_KEYS_UNSET", **cfg})
    return KeyRing(config, clock or Clock())


def test_bearer_and_subprotocol_map_to_the_key_id(tmp_path: Path) -> None:
    keys = ring(tmp_path, f"team-a {hash_key(KEY_A)}  # comment", f"team-b {hash_key(KEY_B)}")
    assert keys.authenticate({"authorization": f"Bearer {KEY_A}"}, [], {}).key_id == "team-a"
    offered = [APP_SUBPROTOCOL, f"rayscribe.bearer.{KEY_B}"]
    assert keys.authenticate({}, offered, {}).key_id == "team-b"
    assert accepted_subprotocol(offered) == APP_SUBPROTOCOL  # never the key itself
    assert accepted_subprotocol([f"rayscribe.bearer.{KEY_B}"]) is None


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer nope"}, {"authorization": f"Basic {KEY_A}"}, {"authorization": "Bearer "}],
)
def test_missing_or_wrong_keys_are_unauthorized(tmp_path: Path, headers: dict[str, str]) -> None:
    keys = ring(tmp_path, f"team-a {hash_key(KEY_A)}")
    with pytest.raises(Unauthorized) as e:
        keys.authenticate(headers, [], {})
    assert e.value.close_code == 4401 and KEY_A not in e.value.message


def test_query_token_only_when_enabled(tmp_path: Path) -> None:
    off = ring(tmp_path, f"team-a {hash_key(KEY_A)}")
    with pytest.raises(Unauthorized):
        off.authenticate({}, [], {"api_key": KEY_A})
    on = ring(tmp_path, f"team-a {hash_key(KEY_A)}", allow_query_token=True)
    assert on.authenticate({}, [], {"api_key": KEY_A}).key_id == "team-a"


def test_no_keys_refuses_everyone_and_off_admits_everyone(tmp_path: Path) -> None:
    with pytest.raises(Unauthorized):
        ring(tmp_path).authenticate({"authorization": f"Bearer {KEY_A}"}, [], {})
    off = KeyRing(AuthConfig(mode="off"))
    assert not off.authenticate({}, [], {}).authenticated


def test_rotation_reloads_the_file_without_restart(tmp_path: Path) -> None:
    clock = Clock()
    keys = ring(tmp_path, f"team-a {hash_key(KEY_A)}", clock=clock, reload_interval_s=1.0)
    path = tmp_path / "keys"
    path.write_text(f"team-b {hash_key(KEY_B)}\n")  # rotate: A out, B in
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 5))
    assert (
        keys.authenticate({"authorization": f"Bearer {KEY_A}"}, [], {}).key_id == "team-a"
    )  # not yet re-checked
    clock.t = 2.0
    assert keys.authenticate({"authorization": f"Bearer {KEY_B}"}, [], {}).key_id == "team-b"
    with pytest.raises(Unauthorized):
        keys.authenticate({"authorization": f"Bearer {KEY_A}"}, [], {})


def test_a_half_written_file_keeps_the_old_keys(tmp_path: Path) -> None:
    clock = Clock()
    keys = ring(tmp_path, f"team-a {hash_key(KEY_A)}", clock=clock, reload_interval_s=0.0)
    (tmp_path / "keys").write_text("team-b 12")
    clock.t = 1.0
    assert keys.authenticate({"authorization": f"Bearer {KEY_A}"}, [], {}).key_id == "team-a"


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_KEYS", f"a {hash_key(KEY_A)}; b {hash_key(KEY_B)}")
    keys = KeyRing(AuthConfig(keys_env="RS_KEYS"))
    assert keys.key_ids == ["a", "b"]


def test_a_raw_key_pasted_as_an_entry_is_rejected_and_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RS_KEYS", f"a {KEY_A}")
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as e:
        KeyRing(AuthConfig(keys_env="RS_KEYS"))
    assert KEY_A not in str(e.value) and KEY_A not in caplog.text


def test_secrets_stay_out_of_logs_and_repr(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        keys = ring(tmp_path, f"team-a {hash_key(KEY_A)}")
        with pytest.raises(Unauthorized):
            keys.authenticate({"authorization": f"Bearer {KEY_B}"}, [], {})
    assert "team-a" in caplog.text
    for secret in (KEY_A, KEY_B, hash_key(KEY_A)):
        assert secret not in caplog.text and secret not in repr(keys)


def test_origin_allow_list() -> None:
    check_origin(None, [])  # not a browser
    check_origin("https://app.example.com/", ["https://app.example.com"])
    check_origin("https://evil.example", ["*"])
    check_origin("http://127.0.0.1:8000", [], host="127.0.0.1:8000")  # the page this server serves
    with pytest.raises(Forbidden) as e:
        check_origin("https://evil.example", ["https://app.example.com"])
    assert e.value.close_code == 4403
    with pytest.raises(Forbidden):  # a page elsewhere may not borrow this server's Host
        check_origin("https://evil.example", [], host="127.0.0.1:8000")


def test_cli_prints_a_key_and_its_stored_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "--id", "team-a"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].split()[-1]
    assert out[1] == f"line: team-a {hash_key(key)}" and key.startswith("rsk_")
