"""API keys: who may open a stream, checked before the socket is accepted.

Keys are never stored: the server holds ``key_id -> sha256(key)`` entries, one per line
(``key_id sha256hex``; ``#`` comments), read from ``keys_file`` (a Kubernetes Secret mounted as a
file, or any file) and the environment variable ``keys_env``.  The file is re-read when its mtime
or size changes (checked at most every ``reload_interval_s``), so keys rotate without a restart.

A client presents its key as ``Authorization: Bearer KEY``, as the WebSocket subprotocol
``rayscribe.bearer.KEY`` offered next to ``rayscribe.v1`` (browsers cannot set headers; the
server echoes ``rayscribe.v1``, never the key), or, only with ``allow_query_token``, as
``?api_key=KEY`` (off by default: URLs end up in access logs).

    python -m deployments.auth new --id team-a     # prints a new key and the line to store
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ingest.errors import ConfigError, Forbidden, Unauthorized

log = logging.getLogger("ray.serve")
APP_SUBPROTOCOL = "rayscribe.v1"
KEY_SUBPROTOCOL_PREFIX = "rayscribe.bearer."
QUERY_PARAM = "api_key"
TOKEN_SUBPROTOCOL = "token"  # the pair "token, <key>" (Deepgram browser SDK, the captions page)
KEY_PREFIX = "rsk_"


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # "off" only where it is explicitly configured (the loopback-only local layer)
    mode: Literal["api_key", "off"] = "api_key"
    keys_file: str | None = None  # "key_id sha256hex" per line; a mounted Secret
    keys_env: str = "RAYSCRIBE_API_KEYS"  # same lines (or ";"-separated) in this env variable
    allow_query_token: bool = False  # ?api_key=... (URLs are logged by proxies)
    reload_interval_s: float = Field(2.0, ge=0.0)


@dataclass(frozen=True)
class Principal:
    """Who a connection belongs to: ``key_id``, or ``anonymous`` with auth off."""

    key_id: str
    authenticated: bool = True


ANONYMOUS = Principal("anonymous", authenticated=False)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # URL- and subprotocol-safe characters


def parse_entries(text: str, source: str) -> dict[str, str]:
    """``key_id sha256hex`` lines (or ";"-separated) -> {hash: key_id}; bad lines are errors."""
    entries: dict[str, str] = {}
    for raw in text.replace(";", "\n").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) != 64 or any(c not in "0123456789abcdef" for c in parts[1]):
            # never echo the line: it might be a raw key pasted by mistake
            raise ConfigError(f"{source}: expected 'key_id sha256hex' lines")
        entries[parts[1]] = parts[0]
    return entries


class KeyRing:
    """The accepted keys, reloaded when the key file changes."""

    def __init__(self, config: AuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._by_hash: dict[str, str] = {}
        self._file_sig: tuple[float, int] | None = None
        self._checked = float("-inf")
        if config.mode == "api_key":
            self.reload(force=True)
            if not self._by_hash:
                log.warning("auth: no API keys configured; every stream is refused until keys appear")

    def __repr__(self) -> str:  # never the hashes either
        return f"KeyRing(mode={self.config.mode}, keys={len(self._by_hash)})"

    @property
    def key_ids(self) -> list[str]:
        return sorted(set(self._by_hash.values()))

    def reload(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._checked < self.config.reload_interval_s:
            return
        self._checked = now
        path = self.config.keys_file
        sig: tuple[float, int] | None = None
        if path:
            try:
                st = os.stat(path)
                sig = (st.st_mtime, st.st_size)
            except OSError:
                sig = None
        if not force and sig == self._file_sig:
            return
        entries = parse_entries(os.environ.get(self.config.keys_env, ""), f"${self.config.keys_env}")
        if path and sig is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    entries.update(parse_entries(f.read(), path))
            except (OSError, ConfigError) as e:
                # a half-written file during rotation: keep the old keys, try again next time
                log.warning(
                    "auth: cannot read key file %s (%s); keeping %d keys",
                    path,
                    type(e).__name__,
                    len(self._by_hash),
                )
                return
        self._file_sig = sig
        if entries != self._by_hash:
            log.info("auth: %d API keys loaded (%s)", len(entries), ", ".join(sorted(set(entries.values()))))
        self._by_hash = entries

    def authenticate(
        self, headers: Mapping[str, str], subprotocols: Sequence[str], query: Mapping[str, str]
    ) -> Principal:
        """The principal for a connection's credentials; :class:`Unauthorized` if none is valid."""
        if self.config.mode == "off":
            return ANONYMOUS
        key = presented_key(headers, subprotocols, query if self.config.allow_query_token else {})
        if key is None:
            raise Unauthorized(
                "an API key is required (Authorization: Bearer, or the rayscribe.bearer.KEY subprotocol)"
            )
        self.reload()
        digest = hash_key(key)
        # a dict lookup on a SHA-256 digest leaks nothing useful about the key; compare anyway
        for stored, key_id in self._by_hash.items():
            if hmac.compare_digest(stored, digest):
                return Principal(key_id)
        raise Unauthorized("the API key is not valid")


def presented_key(
    headers: Mapping[str, str], subprotocols: Sequence[str], query: Mapping[str, str]
) -> str | None:
    """The API key a client presented: ``Authorization: Bearer <key>`` (rayscribe clients) or
    ``Token <key>`` (Deepgram's SDKs); the subprotocol ``rayscribe.bearer.<key>`` or the pair
    ``token, <key>`` (browsers cannot set headers; the page and Deepgram's browser SDK offer
    the pair); ``query``: the query token, where it is allowed."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    offered = [p.strip() for p in subprotocols]
    for proto in offered:
        if proto.startswith(KEY_SUBPROTOCOL_PREFIX) and len(proto) > len(KEY_SUBPROTOCOL_PREFIX):
            return proto[len(KEY_SUBPROTOCOL_PREFIX) :]
    if TOKEN_SUBPROTOCOL in offered:
        i = offered.index(TOKEN_SUBPROTOCOL)
        if i + 1 < len(offered) and offered[i + 1]:
            return offered[i + 1]
    return query.get(QUERY_PARAM) or None


def accepted_subprotocol(subprotocols: Sequence[str]) -> str | None:
    """The subprotocol to echo (a browser that offered subprotocols needs one back), never the
    key itself: ``rayscribe.v1`` if offered, else ``token`` for the ``token, <key>`` pair."""
    offered = [p.strip() for p in subprotocols]
    if APP_SUBPROTOCOL in offered:
        return APP_SUBPROTOCOL
    return TOKEN_SUBPROTOCOL if TOKEN_SUBPROTOCOL in offered else None


def check_origin(origin: str | None, allowed: Sequence[str], host: str | None = None) -> None:
    """Browsers send ``Origin``; other clients do not.  A browser origin must be listed
    (``*`` allows any) or be this server's own (the captions page it serves, ``host``: the
    request's Host header); a missing Origin passes (a server-side client, authenticated by key)."""
    if origin is None or "*" in allowed:
        return
    if host and origin.rstrip("/").lower().split("://", 1)[-1] == host.lower():
        return
    if origin.rstrip("/").lower() not in {a.rstrip("/").lower() for a in allowed}:
        raise Forbidden("this browser origin is not allowed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.auth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser(
        "new", help="make a key: prints the key (give it to the client) and the line to store"
    )
    new.add_argument("--id", required=True, help="key id (who holds it), e.g. team-a")
    hashed = sub.add_parser("hash", help="the stored line for an existing key read from stdin")
    hashed.add_argument("--id", required=True)
    args = parser.parse_args(argv)
    key = new_key() if args.command == "new" else sys.stdin.readline().strip()
    if args.command == "new":
        print(f"key:  {key}")
    print(f"line: {args.id} {hash_key(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
