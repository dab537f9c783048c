"""SessionWriter against a real redis-server: healing a store that lost its last writes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from deployments.session_state import SessionWriter
from deployments.store import NewSession, Progress, hash_token
from ingest import messages as m
from ingest.errors import RayscribeError
from tests.unit.test_store import final, stored

if TYPE_CHECKING:
    from tests.unit.conftest import StoreFactory

START = m.Start(sample_rate=16000, protocol=m.PROTOCOL_V1_1)


def test_writer_rewrites_finals_a_crashed_redis_lost(store: StoreFactory) -> None:
    """With appendfsync everysec a Redis crash can lose writes it acknowledged: the writer
    notices the gap at its next write and writes the lost finals again, in order."""

    async def main() -> None:
        acks: list[float] = []
        lost: list[RayscribeError] = []

        async def on_ack(offset: float) -> None:
            acks.append(offset)

        async def on_lost(error: RayscribeError) -> None:
            lost.append(error)

        async with store() as s:
            w = SessionWriter(
                s, "heal", 1, 0, Progress(0.0, [], 0), on_ack, on_lost, NewSession(START, hash_token("t"))
            )
            for seq in range(4):
                await w.commit([final(seq)], Progress(seq + 1.0, [], seq + 1))
            # what a crash that lost the last two writes leaves behind
            h, f = store.keys("heal")
            await s.redis.ltrim(f, 0, 1)
            await s.redis.hset(h, mapping={"next_seq": 2, "offset": "2.0"})
            await w.commit([final(4)], Progress(5.0, [], 5))
            fields, got = await stored(s, store, "heal")
            assert [x.seq for x in got] == [0, 1, 2, 3, 4] and got[2] == final(2)
            assert float(fields["offset"]) == 5.0 and fields["next_seq"] == "5"
            assert not w.dead and not lost and acks == [1.0, 2.0, 3.0, 4.0, 5.0]

    asyncio.run(main())
