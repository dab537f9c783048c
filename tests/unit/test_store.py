"""SessionStore against a real redis-server: atomic writes, resume, fencing, TTLs, crashes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import TYPE_CHECKING

import pytest

from cluster.redis_server import EmbeddedRedis
from deployments.store import NewSession, Progress, SessionStore, hash_token
from deployments.transcript import Word
from ingest import messages as m
from ingest.errors import (
    InvalidResumeToken,
    ResumeConflict,
    SessionClosed,
    SessionNotFound,
    StateLost,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from tests.unit.conftest import StoreFactory

START = m.Start(sample_rate=16000, protocol=m.PROTOCOL_V1_1, interim_results=False)
TOKEN = "resume-token-0123456789"
NEW = NewSession(START, hash_token(TOKEN))
SID = "sess-1"


def final(seq: int) -> m.Final:
    start, end = seq * 0.5, seq * 0.5 + 0.5
    word = m.WordTiming(word=f"w{seq}", start=start, end=end, probability=0.9)
    return m.Final(seq=seq, text=f"w{seq}", start=start, end=end, words=[word])


def finals(first: int, last: int) -> list[m.Final]:
    return [final(i) for i in range(first, last + 1)]


def words(first: int, last: int) -> list[Word]:
    return [Word(f" w{i}", i * 0.5, i * 0.5 + 0.5, 0.75) for i in range(first, last + 1)]


def progress(offset: float, n_words: int, context: list[Word] | None = None) -> Progress:
    return Progress(offset, context or [], n_words)


async def stored(
    s: SessionStore, store: StoreFactory, sid: str = SID
) -> tuple[dict[str, str], list[m.Final]]:
    """The raw hash and the finals list, read past the store's own code."""
    h, f = store.keys(sid)
    fields: dict[str, str] = await s.redis.hgetall(h)  # type: ignore[assignment]  # decode_responses
    items = await s.redis.lrange(f, 0, -1)
    return fields, [m.Final.model_validate_json(x) for x in items]


def test_first_sync_creates_the_session_with_finals_and_progress(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            ctx = words(0, 1)
            assert await s.sync(SID, 1, 0, finals(0, 1), progress(1.0, 2, ctx), NEW) == 2
            fields, got = await stored(s, store)
            assert got == finals(0, 1)
            assert fields["epoch"] == "1" and fields["state"] == "open" and fields["next_seq"] == "2"
            assert float(fields["offset"]) == 1.0 and fields["words"] == "2"
            rows = [[w.text, w.start, w.end, w.probability] for w in ctx]
            assert json.loads(fields["context"]) == {"committed": rows, "pending": []}
            assert m.Start.model_validate_json(fields["config"]) == START
            assert fields["token"] == hash_token(TOKEN) and TOKEN not in fields.values()  # only the hash

            # the next write appends and advances the offset in the same step
            assert await s.sync(SID, 1, 2, finals(2, 2), progress(1.5, 3)) == 3
            fields, got = await stored(s, store)
            assert got == finals(0, 2) and float(fields["offset"]) == 1.5 and fields["next_seq"] == "3"

    asyncio.run(main())


def test_sync_of_an_unknown_session_without_start_creates_nothing(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            with pytest.raises(SessionNotFound):
                await s.sync(SID, 1, 0, finals(0, 0), progress(0.5, 1))
            assert await s.redis.exists(*store.keys(SID)) == 0

    asyncio.run(main())


def test_refused_write_changes_neither_finals_nor_progress(store: StoreFactory) -> None:
    """A gap (seq 5 when 2 is next) is refused whole: the offset must not move past lost finals."""

    async def main() -> None:
        async with store() as s:
            await s.sync(SID, 1, 0, finals(0, 1), progress(1.0, 2), NEW)
            with pytest.raises(StateLost) as lost:
                await s.sync(SID, 1, 5, finals(5, 6), progress(3.5, 7))
            assert lost.value.next_seq == 2
            fields, got = await stored(s, store)
            assert got == finals(0, 1) and float(fields["offset"]) == 1.0 and fields["next_seq"] == "2"

    asyncio.run(main())


def test_retried_sync_does_not_duplicate_finals(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            assert await s.sync(SID, 1, 0, finals(0, 1), progress(1.0, 2), NEW) == 2
            # the reply was lost: the same write again, still carrying the start
            assert await s.sync(SID, 1, 0, finals(0, 1), progress(1.0, 2), NEW) == 2
            # a coalesced retry: the stored finals plus a new one
            assert await s.sync(SID, 1, 0, finals(0, 2), progress(1.5, 3)) == 3
            fields, got = await stored(s, store)
            assert [f.seq for f in got] == [0, 1, 2] and got == finals(0, 2)
            assert fields["next_seq"] == "3" and float(fields["offset"]) == 1.5

    asyncio.run(main())


def test_resume_bumps_epoch_and_returns_progress_and_missed_finals(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            ctx = words(2, 3)
            await s.sync(SID, 1, 0, finals(0, 3), progress(1.25, 4, ctx), NEW)
            rec = await s.resume(SID, TOKEN, last_seq=1)
            assert rec.session_id == SID and rec.epoch == 2 and rec.config == START
            assert rec.progress == Progress(1.25, ctx, 4)
            assert rec.next_seq == 4
            assert rec.missed == finals(2, 3)  # only seq > last_seq
            fields, _ = await stored(s, store)
            assert fields["epoch"] == "2"

            everything = await s.resume(SID, TOKEN, last_seq=-1)
            assert everything.epoch == 3 and everything.missed == finals(0, 3)
            nothing = await s.resume(SID, TOKEN, last_seq=3)
            assert nothing.epoch == 4 and nothing.missed == [] and nothing.next_seq == 4

    asyncio.run(main())


def test_resume_before_any_final_has_empty_progress(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            await s.sync(SID, 1, 0, [], progress(0.0, 0), NEW)  # a heartbeat before the first final
            rec = await s.resume(SID, TOKEN, last_seq=-1)
            assert rec.epoch == 2 and rec.next_seq == 0 and rec.missed == []
            assert rec.progress == Progress(0.0, [], 0)

    asyncio.run(main())


def test_resume_with_a_wrong_token_is_refused_and_does_not_fence(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            await s.sync(SID, 1, 0, finals(0, 0), progress(0.5, 1), NEW)
            with pytest.raises(InvalidResumeToken):
                await s.resume(SID, "not-the-token", last_seq=-1)
            with pytest.raises(InvalidResumeToken):
                await s.resume(SID, hash_token(TOKEN), last_seq=-1)  # the stored hash is no token
            # the live connection (epoch 1) still owns the session
            assert await s.sync(SID, 1, 1, finals(1, 1), progress(1.0, 2)) == 2

    asyncio.run(main())


def test_resume_of_an_unknown_session_is_not_found(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            with pytest.raises(SessionNotFound) as e:
                await s.resume("nobody", TOKEN, last_seq=-1)
            assert type(e.value) is SessionNotFound
            assert await s.redis.exists(*store.keys("nobody")) == 0

    asyncio.run(main())


def test_closed_session_cannot_be_resumed_or_written(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            await s.sync(SID, 1, 0, finals(0, 0), progress(0.5, 1), NEW)
            assert await s.close(SID, 1) is True
            fields, _ = await stored(s, store)
            assert fields["state"] == "closed"
            with pytest.raises(SessionClosed):
                await s.resume(SID, TOKEN, last_seq=-1)
            with pytest.raises(SessionClosed):
                await s.sync(SID, 1, 1, finals(1, 1), progress(1.0, 2))
            _, got = await stored(s, store)
            assert got == finals(0, 0)

    asyncio.run(main())


def test_after_resume_the_old_epoch_is_fenced(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            await s.sync(SID, 1, 0, finals(0, 1), progress(1.0, 2), NEW)
            rec = await s.resume(SID, TOKEN, last_seq=1)
            with pytest.raises(ResumeConflict):
                await s.sync(SID, 1, 2, finals(2, 3), progress(2.0, 4))
            with pytest.raises(ResumeConflict):  # nor may it rewrite what it had already stored
                await s.sync(SID, 1, 0, finals(0, 1), progress(9.0, 2))
            assert await s.close(SID, 1) is False  # a superseded connection cannot close it
            fields, got = await stored(s, store)
            assert got == finals(0, 1)
            assert float(fields["offset"]) == 1.0 and fields["state"] == "open" and fields["epoch"] == "2"
            # the new owner goes on where the old one left off
            assert await s.sync(SID, rec.epoch, rec.next_seq, finals(2, 2), progress(1.5, 3)) == 3

    asyncio.run(main())


def test_keys_expire_session_ttl_after_a_write_and_closed_grace_after_close(store: StoreFactory) -> None:
    async def main() -> None:
        async with store(session_ttl_s=123, closed_grace_s=9) as s:
            h, f = store.keys(SID)
            await s.sync(SID, 1, 0, finals(0, 1), progress(1.0, 2), NEW)
            for key in (h, f):
                assert 120 <= await s.redis.ttl(key) <= 123
            assert 120 <= await s.ttl(SID) <= 123
            await s.redis.expire(h, 50)  # a later write (here a resume) refreshes both keys
            await s.redis.expire(f, 50)
            await s.resume(SID, TOKEN, last_seq=-1)
            for key in (h, f):
                assert 120 <= await s.redis.ttl(key) <= 123
            assert await s.close(SID, 2)
            for key in (h, f):
                assert 0 < await s.redis.ttl(key) <= 9

    asyncio.run(main())


def test_racing_resumes_get_distinct_epochs_and_only_the_newest_writes(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as a, store() as b:  # two replicas, two connections
            await a.sync(SID, 1, 0, finals(0, 1), progress(1.0, 2), NEW)
            ra, rb = await asyncio.gather(a.resume(SID, TOKEN, 0), b.resume(SID, TOKEN, 0))
            assert {ra.epoch, rb.epoch} == {2, 3}
            assert ra.missed == rb.missed == finals(1, 1)
            loser, winner = sorted((ra, rb), key=lambda r: r.epoch)
            for epoch in (1, loser.epoch):
                with pytest.raises(ResumeConflict):
                    await a.sync(SID, epoch, 2, finals(2, 2), progress(1.5, 3))
            assert await b.sync(SID, winner.epoch, 2, finals(2, 2), progress(1.5, 3)) == 3
            _, got = await stored(a, store)
            assert got == finals(0, 2)

    asyncio.run(main())


def test_state_survives_redis_sigkill_and_restart_on_its_aof(
    store: StoreFactory, own_redis: EmbeddedRedis
) -> None:
    async def main(server: EmbeddedRedis) -> None:
        async with store(url=server.url) as s:
            ctx = words(1, 2)
            await s.sync(SID, 1, 0, finals(0, 2), progress(1.0, 3, ctx), NEW)
            assert (await s.resume(SID, TOKEN, last_seq=-1)).epoch == 2
            await s.sync(SID, 2, 3, finals(3, 3), progress(1.5, 4, ctx))
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)
            # the same client reconnects; everything, the epoch included, came back from the AOF
            rec = await s.resume(SID, TOKEN, last_seq=0)
            assert rec.epoch == 3 and rec.config == START and rec.next_seq == 4
            assert rec.progress == Progress(1.5, ctx, 4) and rec.missed == finals(1, 3)
            with pytest.raises(ResumeConflict):
                await s.sync(SID, 2, 4, finals(4, 4), progress(2.0, 5))
            assert 50 <= await s.ttl(SID) <= 60  # the TTL survived too

    asyncio.run(main(own_redis))


def test_dead_redis_raises_store_unavailable_quickly_and_recovers(
    store: StoreFactory, own_redis: EmbeddedRedis
) -> None:
    async def main(server: EmbeddedRedis) -> None:
        async with store(url=server.url) as s:
            await s.sync(SID, 1, 0, finals(0, 0), progress(0.5, 1), NEW)
            assert s.available
            await asyncio.to_thread(server.kill)
            for op in (
                lambda: s.sync(SID, 1, 1, finals(1, 1), progress(1.0, 2)),
                lambda: s.resume(SID, TOKEN, last_seq=-1),
                lambda: s.close(SID, 1),
            ):
                began = time.monotonic()
                with pytest.raises(StoreUnavailable) as e:
                    await op()
                assert time.monotonic() - began < 3.0
                assert e.value.close_code == 4503
                assert s.available is False
            await asyncio.to_thread(server.start)
            assert await s.sync(SID, 1, 1, finals(1, 1), progress(1.0, 2)) == 2
            assert s.available is True

    asyncio.run(main(own_redis))


def test_hung_redis_raises_store_unavailable_within_the_op_timeout(
    store: StoreFactory, own_redis: EmbeddedRedis
) -> None:
    """A stopped (not dead) server accepts connections but never answers: the op timeout
    bounds the wait, so a stream is never stalled for long."""

    async def main(server: EmbeddedRedis) -> None:
        async with store(url=server.url, op_timeout_s=0.3) as s:
            await s.sync(SID, 1, 0, [], progress(0.0, 0), NEW)
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                began = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await s.sync(SID, 1, 0, finals(0, 0), progress(0.5, 1))
                assert time.monotonic() - began < 3.0
                assert s.available is False
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            assert await s.sync(SID, 1, 0, finals(0, 0), progress(0.5, 1)) == 1
            assert s.available is True

    asyncio.run(main(own_redis))


def test_sessions_are_isolated_by_id_and_prefix(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s, store(prefix=store.config.prefix + "other:") as other:
            await s.sync(SID, 1, 0, finals(0, 1), progress(1.0, 2), NEW)
            await s.sync("sess-2", 1, 0, finals(0, 0), progress(0.5, 1), NewSession(START, hash_token("t2")))
            with pytest.raises(InvalidResumeToken):
                await s.resume("sess-2", TOKEN, last_seq=-1)
            with pytest.raises(SessionNotFound):
                await other.resume(SID, TOKEN, last_seq=-1)
            assert (await s.resume(SID, TOKEN, last_seq=-1)).missed == finals(0, 1)

    asyncio.run(main())


def test_resume_returns_the_last_hypothesis_with_the_progress(store: StoreFactory) -> None:
    """The pending words (newest hypothesis past the committed ones) travel with the progress, so
    the first decode after a resume can agree with them."""

    async def main() -> None:
        async with store() as s:
            pending = words(4, 6)
            await s.sync(SID, 1, 0, finals(0, 1), Progress(1.0, words(0, 3), 4, pending), NEW)
            rec = await s.resume(SID, TOKEN, 1)
            assert rec.progress == Progress(1.0, words(0, 3), 4, pending)

    asyncio.run(main())
