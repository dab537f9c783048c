"""A resume must come from the API key that started the session (real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from deployments.store import NewSession, Progress, hash_token
from ingest import messages as m
from ingest.errors import InvalidResumeToken
from tests.unit.conftest import StoreFactory


def test_resume_under_another_key_is_refused(store: StoreFactory) -> None:
    async def run() -> None:
        async with store() as s:
            new = NewSession(m.Start(sample_rate=16000, protocol="v1.1"), hash_token("tok", "team-a"))
            await s.sync("sid", 1, 0, [], Progress(0.0, [], 0), new)
            with pytest.raises(InvalidResumeToken) as e:
                await s.resume("sid", "tok", -1, "team-b")
            assert e.value.close_code == 4403
            with pytest.raises(InvalidResumeToken):
                await s.resume("sid", "tok", -1)  # no key at all
            assert (await s.resume("sid", "tok", -1, "team-a")).epoch == 2

    asyncio.run(run())


def test_without_a_key_the_v1_1_hash_is_unchanged() -> None:
    import hashlib

    assert hash_token("tok") == hashlib.sha256(b"tok").hexdigest()
