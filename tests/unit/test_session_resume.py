"""Durable StreamSession (protocol v1.1) with a real SessionStore on a real redis-server.

The transport is a socket the test drives while the session runs, and the decoder "hears" word
``w<i>`` in the i-th half second of the stream, so every final can be checked exactly.  With
step_s=1 and max_buffer_s=2 the session commits one final per second of audio and cuts its
buffer (moving the durable offset, hence an ``ack``) every other second.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from cluster.redis_server import EmbeddedRedis
from deployments.session import StreamSession
from deployments.store import SessionStore
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis, Word
from ingest.audio import encode_pcm
from ingest.protocol import Limits

if TYPE_CHECKING:
    from tests.unit.conftest import StoreFactory

Msg = dict[str, Any]
POLICY = PolicyConfig(step_s=1.0, max_buffer_s=2.0, hard_buffer_s=5.0)
START_V1_1 = json.dumps({"type": "start", "sample_rate": 16000, "protocol": "v1.1"})
START_V1 = json.dumps({"type": "start", "sample_rate": 16000})
CLOSE = '{"type": "close"}'
WAIT_S = 5.0


async def counting_decoder(req: DecodeRequest) -> Hypothesis:
    """One word per full 0.5 s of audio, named by its position in the stream."""
    n = int(len(req.audio) / 8000)
    first = int(round(req.offset / 0.5))
    return Hypothesis(
        [Word(f" w{first + i}", req.offset + i * 0.5, req.offset + (i + 1) * 0.5) for i in range(n)]
    )


def expected_words(seconds: float) -> list[str]:
    return [f"w{i}" for i in range(int(seconds / 0.5))]


class LiveSocket:
    """The client side of one connection, driven by the test while the session runs."""

    def __init__(self, on_send: Callable[[Msg], Awaitable[None]] | None = None) -> None:
        self.incoming: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[Msg] = []
        self.close_code: int | None = None
        self.on_send = on_send  # runs before the message counts as delivered
        self._changed = asyncio.Event()

    async def receive(self) -> str | bytes | None:
        return await self.incoming.get()

    async def send_text(self, text: str) -> None:
        message = json.loads(text)
        if self.on_send is not None:
            await self.on_send(message)
        self.sent.append(message)
        self._changed.set()

    async def close(self, code: int) -> None:
        self.close_code = code
        self.incoming.put_nowait(None)
        self._changed.set()

    def push(self, *frames: str | bytes) -> None:
        for frame in frames:
            self.incoming.put_nowait(frame)

    def disconnect(self) -> None:
        self.incoming.put_nowait(None)

    def of(self, kind: str) -> list[Msg]:
        return [m for m in self.sent if m["type"] == kind]

    async def wait_for(self, done: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        async def until() -> None:
            while not done():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; last sent: {self.sent[-4:]}") from None

    async def feed(self, t0: float, t1: float) -> None:
        """Send stream seconds [t0, t1) one second at a time, each time waiting for the decode
        of everything sent (its partial), so the message flow is deterministic."""
        t = t0
        while t < t1 - 1e-9:
            nxt = min(t + 1.0, t1)
            self.push(*audio(t, nxt))
            await self.wait_for(self._decoded_to(nxt), f"the decode of audio up to {nxt} s")
            t = nxt

    def _decoded_to(self, t: float) -> Callable[[], bool]:
        return lambda: any(abs(p["audio_end"] - t) < 1e-6 for p in self.of("partial"))


def audio(t0: float, t1: float) -> list[str | bytes]:
    pcm = encode_pcm(np.zeros(int(round((t1 - t0) * 16000)), dtype=np.float32), "pcm_s16le")
    return [pcm[i : i + 8000] for i in range(0, len(pcm), 8000)]  # 0.25 s frames


def open_session(
    s: SessionStore, session_id: str | None = None, on_send: Callable[[Msg], Awaitable[None]] | None = None
) -> tuple[StreamSession, LiveSocket, asyncio.Task[None]]:
    sock = LiveSocket(on_send)
    session = StreamSession(session_id or uuid.uuid4().hex, sock, counting_decoder, POLICY, Limits(), store=s)
    return session, sock, asyncio.create_task(session.run())


def resume_msg(session_id: str, token: str, last_seq: int) -> str:
    resume = {"type": "resume", "session_id": session_id, "resume_token": token, "last_seq": last_seq}
    return json.dumps(resume)


def words_of(finals: list[Msg]) -> list[str]:
    return [w["word"] for f in finals for w in f["words"]]


def assert_nondecreasing_acks(sock: LiveSocket) -> list[float]:
    offsets = [a["audio_offset"] for a in sock.of("ack")]
    assert offsets == sorted(offsets), offsets
    return offsets


def persisted_check(
    s: SessionStore, store: StoreFactory, session_id: str, seen: list[str]
) -> Callable[[Msg], Awaitable[None]]:
    """on_send hook: each final and ack must already be in Redis when it goes out."""

    async def check(message: Msg) -> None:
        hash_key, finals_key = store.keys(session_id)
        if message["type"] == "final":
            stored = await s.redis.lindex(finals_key, message["seq"])
            assert stored is not None, f"final {message['seq']} sent before it was persisted"
            assert json.loads(stored) == message
            seen.append("final")
        elif message["type"] == "ack":
            offset = await s.redis.hget(hash_key, "offset")
            assert offset is not None and float(offset) >= message["audio_offset"]
            seen.append("ack")

    return check


def test_v1_1_session_persists_every_final_before_sending_it(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            checked: list[str] = []
            sid = "persist-1"
            _, sock, task = open_session(s, sid, persisted_check(s, store, sid, checked))
            sock.push(START_V1_1)
            await sock.wait_for(lambda: bool(sock.sent), "ready")
            ready = sock.sent[0]
            assert ready["type"] == "ready" and ready["session_id"] == sid
            assert isinstance(ready["resume_token"], str) and len(ready["resume_token"]) >= 16
            await sock.feed(0.0, 5.0)
            sock.push(CLOSE)
            await asyncio.wait_for(task, WAIT_S)

            finals = sock.of("final")
            assert [f["seq"] for f in finals] == list(range(len(finals)))
            assert words_of(finals) == expected_words(5.0)
            assert checked.count("final") == len(finals) >= 4
            assert assert_nondecreasing_acks(sock) == [2.0, 4.0] and checked.count("ack") == 2
            assert sock.sent[-1]["type"] == "closed" and sock.close_code == 1000
            fields = await s.redis.hgetall(store.keys(sid)[0])
            assert fields["state"] == "closed" and int(fields["next_seq"]) == len(finals)

    asyncio.run(main())


def test_resume_replays_missed_finals_then_continues_without_gap_or_duplicate(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            checked: list[str] = []
            sid = "resume-1"
            _, a, task_a = open_session(s, sid, persisted_check(s, store, sid, checked))
            a.push(START_V1_1)
            await a.feed(0.0, 5.0)
            token = a.sent[0]["resume_token"]
            a_finals = a.of("final")
            assert [f["seq"] for f in a_finals] == [0, 1, 2, 3]
            a.disconnect()  # the connection drops; the client had only received seq 0 and 1
            await asyncio.wait_for(task_a, WAIT_S)
            assert a.close_code is None  # a drop, not a close: the session stays resumable

            _, b, task_b = open_session(s, None, persisted_check(s, store, sid, checked))
            b.push(resume_msg(sid, token, last_seq=1))
            await b.wait_for(lambda: len(b.sent) >= 3, "resumed + missed finals")
            resumed = b.sent[0]
            assert resumed["type"] == "resumed" and resumed["session_id"] == sid
            assert resumed["next_seq"] == 4 and resumed["protocol"] == "v1.1"
            offset = resumed["audio_offset"]
            assert offset == a.of("ack")[-1]["audio_offset"] == 4.0
            assert b.sent[1:3] == a_finals[2:4]  # exactly the finals it missed, as first sent

            await b.feed(offset, 8.0)  # resend from the durable offset, then go on
            b.push(CLOSE)
            await asyncio.wait_for(task_b, WAIT_S)
            assert b.sent[-1]["type"] == "closed" and b.close_code == 1000

            client_view = a_finals[:2] + b.of("final")
            assert [f["seq"] for f in client_view] == list(range(len(client_view)))
            assert words_of(client_view) == expected_words(8.0)
            assert b.sent[-1]["summary"]["finals"] == len(client_view)
            assert b.sent[-1]["summary"]["words"] == 16
            acks = assert_nondecreasing_acks(b)
            assert acks and acks[0] > offset
            assert not b.of("error")

    asyncio.run(main())


def test_live_session_is_fenced_by_a_resume_through_its_heartbeat(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            sid = "fence-1"
            _, a, task_a = open_session(s, sid)
            a.push(START_V1_1)
            await a.feed(0.0, 3.0)
            token = a.sent[0]["resume_token"]
            assert len(a.of("final")) == 2

            # a second connection takes the session over while the first is still open and idle
            _, b, task_b = open_session(s)
            b.push(resume_msg(sid, token, last_seq=1))
            await b.wait_for(lambda: bool(b.sent), "resumed")
            assert b.sent[0]["type"] == "resumed" and len(b.sent) == 1  # nothing missed

            await asyncio.wait_for(task_a, WAIT_S)  # only the heartbeat can notice: A gets no input
            assert a.sent[-1]["type"] == "error" and a.sent[-1]["code"] == "resume_conflict"
            assert a.close_code == 4409

            await b.feed(b.sent[0]["audio_offset"], 4.0)
            b.push(CLOSE)
            await asyncio.wait_for(task_b, WAIT_S)
            assert b.close_code == 1000
            assert words_of(a.of("final") + b.of("final")) == expected_words(4.0)
            fields = await s.redis.hgetall(store.keys(sid)[0])
            assert fields["epoch"] == "2" and fields["state"] == "closed"

    asyncio.run(main())


def test_fenced_session_that_keeps_streaming_is_closed_on_its_next_write(store: StoreFactory) -> None:
    async def main() -> None:
        async with store(heartbeat_s=60.0) as s:  # no heartbeat in time: the commit must fence it
            sid = "fence-2"
            _, a, task_a = open_session(s, sid)
            a.push(START_V1_1)
            await a.feed(0.0, 3.0)
            record = await s.resume(sid, a.sent[0]["resume_token"], last_seq=1)
            a.push(*audio(3.0, 5.0))
            await asyncio.wait_for(task_a, WAIT_S)
            assert a.sent[-1]["code"] == "resume_conflict" and a.close_code == 4409
            assert [f["seq"] for f in a.of("final")] == [0, 1]  # the refused final was never sent
            stored = await s.redis.lrange(store.keys(sid)[1], 0, -1)
            assert len(stored) == record.next_seq == 2

    asyncio.run(main())


def test_v1_start_gets_no_resume_token_no_acks_and_nothing_stored(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            _, sock, task = open_session(s, "plain-1")
            sock.push(START_V1)
            await sock.feed(0.0, 5.0)
            sock.push(CLOSE)
            await asyncio.wait_for(task, WAIT_S)
            ready = sock.sent[0]
            assert ready["type"] == "ready" and ready["resume_token"] is None and ready["protocol"] == "v1"
            assert words_of(sock.of("final")) == expected_words(5.0)
            assert sock.of("ack") == [] and sock.close_code == 1000
            assert [k async for k in s.redis.scan_iter(match=f"{store.config.prefix}*")] == []

    asyncio.run(main())


def test_resume_errors_close_with_their_codes(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            _, a, task_a = open_session(s, "err-1")
            a.push(START_V1_1)
            await a.feed(0.0, 3.0)
            token = a.sent[0]["resume_token"]
            cases = [
                (resume_msg("err-1", "wrong-token", 1), "invalid_resume_token", 4403),
                (resume_msg("nobody", token, 1), "session_not_found", 4404),
            ]
            for message, code, close in cases:
                _, b, task_b = open_session(s)
                b.push(message, *audio(3.0, 4.0))  # audio queued behind the refused resume is ignored
                await asyncio.wait_for(task_b, WAIT_S)
                assert [x["type"] for x in b.sent] == ["error"], b.sent
                assert b.sent[0]["code"] == code and b.close_code == close
            await a.feed(3.0, 4.0)  # failed resumes did not fence the live connection: it still writes
            assert a.close_code is None and [f["seq"] for f in a.of("final")] == [0, 1, 2]
            a.push(CLOSE)
            await asyncio.wait_for(task_a, WAIT_S)
            _, c, task_c = open_session(s)
            c.push(resume_msg("err-1", token, 1))
            await asyncio.wait_for(task_c, WAIT_S)
            assert c.sent[-1]["code"] == "session_closed" and c.close_code == 4410

    asyncio.run(main())


def test_resume_while_redis_is_down_is_store_unavailable(store: StoreFactory) -> None:
    async def main(server: EmbeddedRedis) -> None:
        async with store(url=server.url) as s:
            _, a, task_a = open_session(s, "down-1")
            a.push(START_V1_1)
            await a.feed(0.0, 3.0)
            token = a.sent[0]["resume_token"]
            a.disconnect()
            await asyncio.wait_for(task_a, WAIT_S)
            await asyncio.to_thread(server.kill)

            _, b, task_b = open_session(s)
            b.push(resume_msg("down-1", token, 1))
            await asyncio.wait_for(task_b, WAIT_S)
            assert [x["type"] for x in b.sent] == ["error"]
            assert b.sent[0]["code"] == "store_unavailable" and b.close_code == 4503

            await asyncio.to_thread(server.start)  # the same resume works once Redis is back
            _, c, task_c = open_session(s)
            c.push(resume_msg("down-1", token, 1))
            await c.wait_for(lambda: bool(c.sent), "resumed")
            assert c.sent[0]["type"] == "resumed" and c.sent[0]["next_seq"] == 2
            c.push(CLOSE)
            await asyncio.wait_for(task_c, WAIT_S)

    with EmbeddedRedis() as server:
        asyncio.run(main(server))


def test_stream_survives_redis_death_and_writes_pending_finals_coalesced(store: StoreFactory) -> None:
    async def main(server: EmbeddedRedis) -> None:
        async with store(url=server.url) as s:
            sid = "degraded-1"
            batches: list[tuple[int, int]] = []  # (first_seq, finals) of each successful write
            real_sync = s.sync

            async def recording_sync(*args: Any, **kwargs: Any) -> int:
                result = await real_sync(*args, **kwargs)
                batches.append((args[2], len(args[3])))
                return result

            s.sync = recording_sync  # type: ignore[method-assign]
            session, sock, task = open_session(s, sid)
            sock.push(START_V1_1)
            await sock.feed(0.0, 3.0)
            assert len(sock.of("final")) == 2 and assert_nondecreasing_acks(sock) == [2.0]
            await asyncio.to_thread(server.kill)
            writes_before = len(batches)

            await sock.feed(3.0, 7.0)  # Redis is dead: the stream goes on, finals still arrive
            finals = sock.of("final")
            assert [f["seq"] for f in finals] == list(range(6)) and not sock.of("error")
            assert sock.close_code is None and len(batches) == writes_before
            assert session.writer is not None and session.writer.degraded
            assert [f.seq for f in session.writer.pending] == [2, 3, 4, 5]
            assert assert_nondecreasing_acks(sock) == [2.0]  # nothing new is durable, so no ack

            await asyncio.to_thread(server.start)
            await sock.wait_for(lambda: len(sock.of("ack")) >= 2, "the ack of the pending write")
            assert batches[writes_before] == (2, 4)  # the first write back: all pending finals at once
            stored = await s.redis.lrange(store.keys(sid)[1], 0, -1)
            assert [json.loads(x) for x in stored] == finals
            assert assert_nondecreasing_acks(sock) == [2.0, 6.0]
            assert not session.writer.degraded and session.writer.pending == []

            sock.push(CLOSE)
            await asyncio.wait_for(task, WAIT_S)
            assert sock.close_code == 1000 and words_of(sock.of("final")) == expected_words(7.0)

    with EmbeddedRedis() as server:
        asyncio.run(main(server))
