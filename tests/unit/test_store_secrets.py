"""Redis credentials: a password in the URL and TLS (rediss://) are taken as given to redis-py,
and an unreachable store's warning never carries the password."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio.connection import SSLConnection

from cluster.redis_server import free_port
from deployments.store import SessionStore, StoreConfig
from ingest.errors import StoreUnavailable


def test_rediss_url_uses_tls() -> None:
    async def run() -> bool:
        s = SessionStore(StoreConfig(url="rediss://:pw@redis.example:6380/0"))
        try:
            return issubclass(s.redis.connection_pool.connection_class, SSLConnection)
        finally:
            await s.aclose()

    assert asyncio.run(run())


def test_password_never_logged(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAYSCRIBE_REDIS_URL", raising=False)
    secret = "s3cr3t-redis-pw"

    async def run() -> None:
        s = SessionStore(StoreConfig(url=f"redis://:{secret}@127.0.0.1:{free_port()}/0", op_timeout_s=0.3))
        try:
            with pytest.raises(StoreUnavailable) as e:
                await s.resume("sid", "tok", -1)
            assert secret not in str(e.value)
        finally:
            await s.aclose()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(run())
    assert "unreachable" in caplog.text and secret not in caplog.text
