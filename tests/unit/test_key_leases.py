"""Streams per key across ingress replicas (deployments/key_leases.py) on a real redis-server:
two KeyLeases on one store stand for two replicas."""

from __future__ import annotations

import asyncio

import pytest

from deployments.key_leases import KeyLeases
from ingest.errors import StoreUnavailable
from tests.unit.conftest import StoreFactory


def test_the_limit_holds_across_replicas(store: StoreFactory) -> None:
    async def run() -> None:
        async with store() as s1, store() as s2:
            one, two = KeyLeases(s1), KeyLeases(s2)
            assert await one.acquire("team-a", "c1", 2) == (True, 0)
            assert await two.acquire("team-a", "c2", 2) == (True, 1)
            assert await two.acquire("team-a", "c3", 2) == (False, 2)  # the key's third stream
            assert await one.acquire("team-b", "c4", 2) == (True, 0)  # another key: its own count
            assert await one.acquire("team-a", "c1", 2) == (True, 2)  # a held lease is kept
            await one.release("team-a", "c1")
            assert await two.acquire("team-a", "c3", 2) == (True, 1)

    asyncio.run(run())


def test_a_dead_replicas_leases_lapse_and_refreshed_ones_do_not(
    store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        async with store() as s1, store() as s2:
            dead, live = KeyLeases(s1), KeyLeases(s2)
            assert (await dead.acquire("k", "gone", 2))[0]
            assert (await live.acquire("k", "kept", 2))[0]
            assert not (await live.acquire("k", "new", 2))[0]
            later = KeyLeases._now_ms() + live.lease_ms // 2
            monkeypatch.setattr(KeyLeases, "_now_ms", staticmethod(lambda: later))
            await live.refresh([("k", "kept")])  # "dead" does not refresh "gone"
            monkeypatch.setattr(KeyLeases, "_now_ms", staticmethod(lambda: later + live.lease_ms // 2 + 10))
            assert await live.acquire("k", "new", 2) == (True, 1)  # "gone" lapsed, "kept" did not
            assert not (await live.acquire("k", "more", 2))[0]

    asyncio.run(run())


def test_a_released_lease_is_not_revived_by_a_late_refresh(store: StoreFactory) -> None:
    async def run() -> None:
        async with store() as s:
            leases = KeyLeases(s)
            assert (await leases.acquire("k", "a", 1))[0]
            await leases.release("k", "a")
            await leases.refresh([("k", "a")])
            assert await leases.acquire("k", "b", 1) == (True, 0)

    asyncio.run(run())


def test_an_unreachable_store_raises_the_typed_error(store: StoreFactory) -> None:
    async def run() -> None:
        async with store(url="redis://127.0.0.1:1/0") as s:
            with pytest.raises(StoreUnavailable):
                await KeyLeases(s).acquire("k", "a", 1)

    asyncio.run(run())


def test_a_cooldown_set_on_one_replica_is_seen_by_the_other_and_lapses(store: StoreFactory) -> None:
    async def run() -> None:
        async with store() as s1, store() as s2:
            one, two = KeyLeases(s1), KeyLeases(s2)
            assert await two.cooling_s("team-a") == 0.0
            await one.cool("team-a", 30.0)
            assert 29.0 < await two.cooling_s("team-a") <= 30.0
            assert await two.cooling_s("team-b") == 0.0  # another key is not held back
            await one.cool("team-c", 0.05)
            async with asyncio.timeout(5):
                while await two.cooling_s("team-c") > 0:  # each check a round trip: Redis expires it
                    pass
            assert await two.cooling_s("team-c") == 0.0

    asyncio.run(run())
