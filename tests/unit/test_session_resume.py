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
import pytest

from cluster.redis_server import EmbeddedRedis
from deployments.session import StreamSession
from deployments.session_state import SessionWriter
from deployments.store import NewSession, Progress, SessionStore, hash_token
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis, Word
from deployments.vad import VadConfig
from ingest import messages as m
from ingest.audio import encode_pcm
from ingest.errors import RayscribeError
from ingest.protocol import Limits

NO_VAD = VadConfig(enabled=False)  # silent fake audio: the serving plane, not the VAD, is under test

if TYPE_CHECKING:
    from tests.unit.conftest import StoreFactory

Msg = dict[str, Any]
POLICY = PolicyConfig(step_s=1.0, max_buffer_s=2.0, hard_buffer_s=5.0, vad=NO_VAD)
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


class PersistedCheck:
    """on_send hook: each final and ack must already be in Redis when it goes out.  Findings
    are collected (an exception here would only surface as the session's internal_error)."""

    def __init__(self, s: SessionStore, store: StoreFactory, session_id: str) -> None:
        self.s, self.keys = s, store.keys(session_id)
        self.finals = self.acks = 0
        self.problems: list[str] = []

    async def __call__(self, message: Msg) -> None:
        hash_key, finals_key = self.keys
        if message["type"] == "final":
            stored = await self.s.redis.lindex(finals_key, message["seq"])
            if stored is None or json.loads(stored) != message:
                self.problems.append(f"final {message['seq']} sent as {message}, stored as {stored!r}")
            self.finals += 1
        elif message["type"] == "ack":
            offset = await self.s.redis.hget(hash_key, "offset")
            if offset is None or float(offset) < message["audio_offset"]:
                self.problems.append(f"ack {message['audio_offset']} sent, stored offset {offset!r}")
            self.acks += 1


def test_v1_1_session_persists_every_final_before_sending_it(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            sid = "persist-1"
            checked = PersistedCheck(s, store, sid)
            _, sock, task = open_session(s, sid, checked)
            sock.push(START_V1_1)
            await sock.wait_for(lambda: bool(sock.sent), "ready")
            ready = sock.sent[0]
            assert ready["type"] == "ready" and ready["session_id"] == sid and ready["protocol"] == "v1.1"
            assert isinstance(ready["resume_token"], str) and len(ready["resume_token"]) >= 16
            await sock.feed(0.0, 5.0)
            sock.push(CLOSE)
            await asyncio.wait_for(task, WAIT_S)

            finals = sock.of("final")
            assert [f["seq"] for f in finals] == list(range(len(finals)))
            assert words_of(finals) == expected_words(5.0)
            assert checked.problems == [] and checked.finals == len(finals) >= 4
            assert assert_nondecreasing_acks(sock) == [2.0, 4.0] and checked.acks == 2
            assert sock.sent[-1]["type"] == "closed" and sock.close_code == 1000
            fields = await s.redis.hgetall(store.keys(sid)[0])
            assert fields["state"] == "closed" and int(fields["next_seq"]) == len(finals)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("drop_at", "last_seq", "offset"),
    [
        (5.0, 1, 4.0),  # buffer cut at 4.0, the last committed word's end: no committed word inside
        (4.0, 2, 2.0),  # the buffer starts at 2.0 with committed w4 w5 inside (the forced prefix)
        (4.0, -1, 2.0),  # the client had received no final at all
    ],
)
def test_resume_replays_missed_finals_then_continues_without_gap_or_duplicate(
    store: StoreFactory, drop_at: float, last_seq: int, offset: float
) -> None:
    async def main() -> None:
        async with store() as s:
            sid = "resume-1"
            checked = PersistedCheck(s, store, sid)
            _, a, task_a = open_session(s, sid, checked)
            a.push(START_V1_1)
            await a.feed(0.0, drop_at)
            token = a.sent[0]["resume_token"]
            a_finals = a.of("final")
            assert [f["seq"] for f in a_finals] == list(range(int(drop_at) - 1))
            a.disconnect()  # the connection drops; the client had received finals up to last_seq
            await asyncio.wait_for(task_a, WAIT_S)
            assert a.close_code is None  # a drop, not a close: the session stays resumable

            _, b, task_b = open_session(s, None, checked)
            b.push(resume_msg(sid, token, last_seq=last_seq))
            missed = a_finals[last_seq + 1 :]
            await b.wait_for(lambda: len(b.sent) >= 1 + len(missed), "resumed + missed finals")
            resumed = b.sent[0]
            assert resumed["type"] == "resumed" and resumed["session_id"] == sid
            assert resumed["next_seq"] == len(a_finals) and resumed["protocol"] == "v1.1"
            assert resumed["audio_offset"] == a.of("ack")[-1]["audio_offset"] == offset
            assert b.sent[1 : 1 + len(missed)] == missed  # exactly the finals it missed, as first sent

            await b.feed(offset, 8.0)  # resend from the durable offset, then go on
            b.push(CLOSE)
            await asyncio.wait_for(task_b, WAIT_S)
            assert b.sent[-1]["type"] == "closed" and b.close_code == 1000

            client_view = a_finals[: last_seq + 1] + b.of("final")
            assert [f["seq"] for f in client_view] == list(range(len(client_view)))
            assert words_of(client_view) == expected_words(8.0)
            assert b.sent[-1]["summary"]["finals"] == len(client_view)
            assert b.sent[-1]["summary"]["words"] == 16
            acks = assert_nondecreasing_acks(b)
            assert acks and acks[0] > offset
            assert not b.of("error") and checked.problems == []
            assert checked.finals == len(a_finals) + len(b.of("final"))

    asyncio.run(main())


def test_drained_session_tells_the_client_to_reconnect_and_resumes(store: StoreFactory) -> None:
    async def main() -> None:
        async with store() as s:
            sid = "drain-1"
            a_session, a, task_a = open_session(s, sid)
            a.push(START_V1_1)
            await a.feed(0.0, 3.0)
            await a_session.drain("replica shutting down")
            await asyncio.wait_for(task_a, WAIT_S)
            assert a.sent[-1] == {"type": "reconnect", "reason": "replica shutting down"}
            assert a.close_code == 1012

            _, b, task_b = open_session(s)
            b.push(resume_msg(sid, a.sent[0]["resume_token"], last_seq=1))
            await b.wait_for(lambda: bool(b.sent), "resumed")
            assert b.sent[0]["type"] == "resumed" and b.sent[0]["next_seq"] == 2
            await b.feed(b.sent[0]["audio_offset"], 5.0)
            b.push(CLOSE)
            await asyncio.wait_for(task_b, WAIT_S)
            assert words_of(a.of("final") + b.of("final")) == expected_words(5.0)

    asyncio.run(main())


@pytest.mark.parametrize("how", ["drop", "drain"])
def test_session_lost_before_its_first_final_is_still_resumable(store: StoreFactory, how: str) -> None:
    """The client holds a resume token from ``ready`` on: a connection that ends before any
    final or heartbeat (heartbeat_s is long here) must still leave a session to resume."""

    async def main() -> None:
        async with store(heartbeat_s=60.0) as s:
            sid = "early-1"
            a_session, a, task_a = open_session(s, sid)
            a.push(START_V1_1, *audio(0.0, 0.5))
            await a.wait_for(lambda: bool(a.sent), "ready")
            if how == "drain":
                await a_session.drain("replica shutting down")
            else:
                a.disconnect()
            await asyncio.wait_for(task_a, WAIT_S)

            _, b, task_b = open_session(s)
            b.push(resume_msg(sid, a.sent[0]["resume_token"], last_seq=-1))
            await b.wait_for(lambda: bool(b.sent), "resumed")
            assert b.sent[0]["type"] == "resumed", b.sent[0]
            assert b.sent[0]["audio_offset"] == 0.0 and b.sent[0]["next_seq"] == 0
            await b.feed(0.0, 2.0)
            b.push(CLOSE)
            await asyncio.wait_for(task_b, WAIT_S)
            assert words_of(b.of("final")) == expected_words(2.0)

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
            assert ready["type"] == "ready" and ready["protocol"] == "v1"
            assert ready.get("resume_token") is None
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


def test_resume_while_redis_is_down_is_store_unavailable(
    store: StoreFactory, own_redis: EmbeddedRedis
) -> None:
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

    asyncio.run(main(own_redis))


def test_stream_survives_redis_death_and_writes_pending_finals_coalesced(
    store: StoreFactory, own_redis: EmbeddedRedis
) -> None:
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

    asyncio.run(main(own_redis))


def test_failed_writes_that_race_start_one_retry_and_stop_ends_it(
    store: StoreFactory, own_redis: EmbeddedRedis
) -> None:
    """A heartbeat and a commit that both find Redis gone (here two commits, the same
    interleaving: both pass the ``degraded`` check, then fail one after the other) must leave
    one background retry, which ``stop`` ends: no task may outlive the connection."""

    async def on_ack(offset: float) -> None:
        pass

    async def on_lost(error: RayscribeError) -> None:
        raise AssertionError(f"unexpected {error!r}")

    def final(seq: int) -> m.Final:
        word = m.WordTiming(word=f"w{seq}", start=seq * 0.5, end=seq * 0.5 + 0.5, probability=1.0)
        return m.Final(seq=seq, text=f"w{seq}", start=word.start, end=word.end, words=[word])

    async def main(server: EmbeddedRedis) -> None:
        async with store(url=server.url) as s:
            new = NewSession(m.Start(sample_rate=16000, protocol="v1.1"), hash_token("t"))
            writer = SessionWriter(s, "race-1", 1, 0, Progress(0.0, [], 0), on_ack, on_lost, new=new)
            await asyncio.to_thread(server.kill)
            await asyncio.gather(
                writer.commit([final(0)], Progress(0.5, [], 1)),
                writer.commit([final(1)], Progress(1.0, [], 2)),
            )
            assert writer.degraded and [f.seq for f in writer.pending] == [0, 1]
            await writer.stop()
            leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert leftover == [], leftover

    asyncio.run(main(own_redis))
