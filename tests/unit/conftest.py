"""A real redis-server for the session-store tests, and per-test stores on their own key prefix.

``redis.asyncio`` clients bind to the event loop they first run on, and these tests drive their
coroutines with ``asyncio.run``, so the ``store`` fixture hands out a factory: open each
:class:`SessionStore` inside the test's loop with ``async with store() as s:``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from cluster.redis_server import EmbeddedRedis
from deployments.store import REDIS_URL_ENV, SessionStore, StoreConfig


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


class CrashableRedis(EmbeddedRedis):
    """A server of one's own, to SIGKILL and restart, that fsyncs its AOF on every write.

    With the shipped ``appendfsync everysec`` Redis postpones the AOF write (up to 2 s) while a
    background fsync is slow, still answering clients; a SIGKILL then loses acknowledged writes.
    That happens on a loaded machine, so tests that check what survives a crash fsync each write.
    """

    def start(self) -> None:
        super().start()
        client = redis.Redis.from_url(self.url)
        try:
            client.config_set("appendfsync", "always")
        finally:
            client.close()


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A dedicated redis-server for a test that kills it (the shared one stays up)."""
    with CrashableRedis() as server:
        yield server


class StoreFactory:
    """``async with store() as s`` opens a store on this test's prefix and closes it on exit;
    ``store(url=..., heartbeat_s=...)`` overrides config fields (e.g. a dedicated server)."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.opened = 0
        self.closed = 0

    def with_(self, **overrides: Any) -> StoreConfig:
        return StoreConfig.model_validate({**self.config.model_dump(), **overrides})

    @contextlib.asynccontextmanager
    async def __call__(self, **overrides: Any) -> AsyncIterator[SessionStore]:
        s = SessionStore(self.with_(**overrides))
        self.opened += 1
        try:
            yield s
        finally:
            await s.aclose()
            self.closed += 1

    def keys(self, session_id: str) -> tuple[str, str]:
        """The (hash, finals list) keys of a session, as the schema in deployments/store.py names them."""
        base = f"{self.config.prefix}s:{session_id}"
        return base, f"{base}:finals"


@pytest.fixture
def store(redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreFactory]:
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)  # it would override the test server's url
    config = StoreConfig(
        url=redis_server.url,
        prefix=f"test{uuid.uuid4().hex}:",
        session_ttl_s=60,
        closed_grace_s=7,
        op_timeout_s=0.5,
        heartbeat_s=0.05,
    )
    factory = StoreFactory(config)
    yield factory
    assert factory.opened == factory.closed, "a SessionStore was left open"
    if redis_server.proc is not None and redis_server.proc.poll() is None:
        client = redis.Redis.from_url(redis_server.url)
        try:
            keys = list(client.scan_iter(match=f"{config.prefix}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
