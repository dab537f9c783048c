"""The client SDK (protocol v1.1 resume) against a real WebSocket server on loopback.

Each connection runs a real :class:`StreamSession` with a real :class:`SessionStore` on the test
redis-server; the decoder is a fake that hears one word per 0.5 s of audio.  The audio says
where it is: the i-th half second has the constant level ``(i + 1) / 1000``, and the decoder
names each word by what it hears (``w<i>``), by its position when it hears silence
(``gap<k>``) or a mix of the two (``mix<k>``).  A resend from the wrong place, a gap filled
with the wrong amount of silence or a lost/duplicated final all change the transcript.

The server side is driven through hooks on each connection's transport: drop the TCP
connection (no close frame) after the k-th final, drain the session, stop listening...
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
import types
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import ingest.client as client_module
from cluster.redis_server import EmbeddedRedis
from deployments.session import StreamSession
from deployments.store import SessionStore
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis, Word
from deployments.vad import VadConfig
from ingest import messages as m
from ingest.cli import printer
from ingest.client import (
    AudioGap,
    ClientEvent,
    Reconnecting,
    SessionResumed,
    StreamOptions,
    StreamResult,
    stream_audio,
)
from ingest.errors import Overloaded
from ingest.protocol import Limits, ServerProtocol

NO_VAD = VadConfig(enabled=False)  # silent fake audio: the serving plane, not the VAD, is under test

if TYPE_CHECKING:
    from tests.unit.conftest import StoreFactory

pytestmark = pytest.mark.timeout(60)

RATE = 16000
SEG = RATE // 2  # one word per half second
LEVEL = 1000.0
# a final per second of audio; the buffer is cut (the durable offset moves: an ack) every 2 s
POLICY = PolicyConfig(step_s=1.0, max_buffer_s=2.0, hard_buffer_s=5.0, vad=NO_VAD)
STREAM_TIMEOUT_S = 15.0
Msg = dict[str, Any]
Event = m.AnyServerMessage | ClientEvent


def speech(seconds: float) -> np.ndarray:
    """Half second i has the constant level (i + 1) / 1000."""
    n = int(round(seconds * RATE))
    return ((np.arange(n) // SEG) + 1).astype(np.float32) / LEVEL


async def listening_decoder(req: DecodeRequest) -> Hypothesis:
    words = []
    for i in range(len(req.audio) // SEG):
        k = int(round(req.offset / 0.5)) + i  # where the word is in the stream
        levels = np.round(req.audio[i * SEG : (i + 1) * SEG] * LEVEL)
        if not levels.any():
            name = f"gap{k}"
        elif (levels == levels[0]).all():
            name = f"w{int(levels[0]) - 1}"  # what the audio says it is
        else:
            name = f"mix{k}"
        words.append(Word(" " + name, req.offset + i * 0.5, req.offset + (i + 1) * 0.5))
    return Hypothesis(words)


def expected_words(seconds: float, gaps: Sequence[AudioGap] = ()) -> list[str]:
    """The transcript of ``speech(seconds)`` where the ``gaps`` were replaced by silence."""
    silent = [(round(g.start_s * RATE), round(g.end_s * RATE)) for g in gaps]
    words = []
    for k in range(int(seconds / 0.5)):
        a, b = k * SEG, (k + 1) * SEG
        covered = sum(max(0, min(b, e) - max(a, s)) for s, e in silent)
        words.append(f"w{k}" if covered == 0 else f"gap{k}" if covered >= SEG else f"mix{k}")
    return words


def words_of(finals: list[m.Final]) -> list[str]:
    return [w.word for f in finals for w in f.words]


def assert_complete(result: StreamResult, seconds: float, gaps: Sequence[AudioGap] = ()) -> None:
    """Every final exactly once, in order; the transcript and word times match stream time."""
    assert result.error is None, result.error
    assert [f.seq for f in result.finals] == list(range(len(result.finals)))
    assert words_of(result.finals) == expected_words(seconds, gaps)
    for k, w in enumerate(w for f in result.finals for w in f.words):
        assert (w.start, w.end) == (k * 0.5, k * 0.5 + 0.5), w
    assert result.summary is not None
    assert result.summary.finals == len(result.finals)
    assert result.summary.words == int(seconds / 0.5)
    assert result.summary.audio_seconds == seconds  # the server heard the whole stream, no more
    assert result.close_code == 1000


# --- the server ---------------------------------------------------------------------------

Hook = Callable[["WsTransport", Msg], Awaitable[None]]


class WsTransport:
    """StreamSession's Transport over one websockets server connection."""

    def __init__(self, ws: ServerConnection, server: ResumeServer, index: int) -> None:
        self.ws, self.server, self.index = ws, server, index
        self.session: StreamSession | None = None
        self.received: list[Msg] = []  # text frames from the client
        self.audio_bytes = 0
        self.sent: list[Msg] = []  # text frames to the client
        self.aborted = False
        self.closed_with: int | None = None  # the close code the session asked for

    async def receive(self) -> str | bytes | None:
        try:
            data = await self.ws.recv()
        except ConnectionClosed:
            return None
        if isinstance(data, str):
            self.received.append(json.loads(data))
        else:
            self.audio_bytes += len(data)
            if self.server.on_audio is not None and self.server.on_audio(self):
                return None
        return data

    async def send_text(self, text: str) -> None:
        if self.aborted:
            return
        try:
            await self.ws.send(text)
        except ConnectionClosed:
            return
        message = json.loads(text)
        self.sent.append(message)
        if self.server.on_sent is not None:
            await self.server.on_sent(self, message)

    async def close(self, code: int) -> None:
        self.closed_with = code
        with contextlib.suppress(ConnectionClosed):
            await self.ws.close(code)

    def abort(self) -> None:
        """Drop the TCP connection: no close frame, as when a replica or a network dies."""
        self.aborted = True
        self.ws.transport.abort()

    def of(self, kind: str) -> list[Msg]:
        return [x for x in self.sent if x["type"] == kind]


class ResumeServer:
    """A loopback WebSocket server: each connection is a StreamSession on the real store."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.port = 0
        self.transports: list[WsTransport] = []
        self.on_sent: Hook | None = None  # after each text frame the server sent
        self.on_audio: Callable[[WsTransport], bool] | None = None  # True: it dropped the connection
        self.hang_resumes = False
        # the first this many connections are refused the way a busy ingress refuses them
        # (deployments/ingress.py: the typed error, then close 1013, before reading a frame);
        # bare: close 1013 with no message
        self.busy_first = 0
        self.busy_bare = False
        self._servers: list[Server] = []
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    async def listen(self) -> None:
        server = await serve(self._handle, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._servers.append(server)

    def stop_listening(self) -> None:
        """New connections are refused; open ones carry on."""
        self._servers[-1].server.close()

    def listen_again_in(self, delay_s: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay_s)
            await self.listen()

        self.tasks.append(asyncio.create_task(later()))

    async def _handle(self, ws: ServerConnection) -> None:
        transport = WsTransport(ws, self, len(self.transports))
        self.transports.append(transport)
        if transport.index < self.busy_first:
            refusal = ServerProtocol(Limits())
            refusal.fail(Overloaded("this replica already serves 64 streams; retry later"))
            for text in [] if self.busy_bare else refusal.data_to_send():
                await ws.send(text)
            await ws.close(refusal.close_code or 1013)
            return
        if transport.index > 0 and self.hang_resumes:
            await ws.wait_closed()  # a replica that accepts connections but never answers
            return
        session = StreamSession(uuid.uuid4().hex, transport, listening_decoder, POLICY, Limits(), self.store)
        transport.session = session
        await session.run()

    async def aclose(self) -> None:
        for task in self.tasks:
            await task
        for server in self._servers:
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def running_server(store: StoreFactory, **overrides: Any) -> Any:
    async with store(**overrides) as s:
        server = ResumeServer(s)
        await server.listen()
        try:
            yield server
        finally:
            await server.aclose()


def after_final(
    seq: int, action: Callable[[WsTransport], Awaitable[None] | None], connection: int = 0
) -> Hook:
    """A hook running ``action`` on a connection (the first) once it has sent final ``seq``."""

    async def hook(transport: WsTransport, message: Msg) -> None:
        if transport.index == connection and message["type"] == "final" and message["seq"] == seq:
            result = action(transport)
            if result is not None:
                await result

    return hook


class Recorder:
    """on_message: every message and client event, with its arrival time."""

    def __init__(self, also: Callable[[Event], None] | None = None) -> None:
        self.events: list[tuple[float, Event]] = []
        self.also = also

    def __call__(self, message: Event) -> None:
        self.events.append((time.monotonic(), message))
        if self.also is not None:
            self.also(message)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]

    def times(self, kind: type[Any]) -> list[float]:
        return [t for t, e in self.events if isinstance(e, kind)]

    def index(self, kind: type[Any]) -> int:
        return next(i for i, (_, e) in enumerate(self.events) if isinstance(e, kind))

    def before(self, first: type[Any], kind: type[Any]) -> list[Any]:
        """The ``kind`` events that came before the first ``first`` event."""
        stop = self.index(first)
        return [e for _, e in self.events[:stop] if isinstance(e, kind)]

    def last_seq_before(self, first: type[Any]) -> int:
        """The highest final seq handed over before the first ``first`` event."""
        return max((f.seq for f in self.before(first, m.Final)), default=-1)


async def stream(server: ResumeServer, seconds: float, options: StreamOptions, rec: Recorder) -> StreamResult:
    return await asyncio.wait_for(
        stream_audio(server.url, speech(seconds), RATE, options, rec), STREAM_TIMEOUT_S
    )


# --- tests --------------------------------------------------------------------------------


def test_dropped_connection_is_resumed_without_losing_or_repeating_a_final(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:
            drop = after_final(2, WsTransport.abort)

            async def hook(transport: WsTransport, message: Msg) -> None:
                await drop(transport, message)
                if transport.index == 1 and message["type"] == "resumed":
                    # a server replaying from too far back: finals the client holds come again
                    for final in server.transports[0].of("final"):
                        await transport.ws.send(json.dumps(final))

            server.on_sent = hook
            rec = Recorder()
            opts = StreamOptions(speed=4.0)
            result = await stream(server, 6.0, opts, rec)

            assert_complete(result, 6.0)  # ...and never handed over twice
            first, second = server.transports  # one drop, one resume: no more connections
            assert first.aborted and first.of("final")[-1]["seq"] >= 2
            assert [e.attempt for e in rec.of(Reconnecting)] == [1]
            assert "connection closed" in rec.of(Reconnecting)[0].reason
            assert result.resumes == rec.of(SessionResumed) and result.gaps == [] == rec.of(AudioGap)

            (r,) = result.resumes
            held = rec.last_seq_before(m.Resumed)
            assert r.session_id == result.session_id and r.attempt == 1
            assert 0 <= r.downtime_s < 5.0 and r.disconnected_at <= r.resumed_at
            # resent from the durable offset the server had acked (or the start)
            acks = [0.0] + [a["audio_offset"] for a in first.of("ack")]
            assert r.audio_offset in acks
            client_acks = [a.audio_offset for a in rec.before(m.Resumed, m.Ack)]
            assert r.audio_offset >= max(client_acks, default=0.0)
            assert r.next_seq >= 3 and r.missed_finals == r.next_seq - 1 - held
            assert second.received[0] == {
                "type": "resume",
                "session_id": result.session_id,
                "resume_token": first.sent[0]["resume_token"],
                "last_seq": held,
                "audio_from": max(client_acks, default=0.0),  # the replay buffer's start
            }
            # capture went on during the outage; what the server had not committed was resent
            assert r.resent_s > 0
            during = [at for _, at in result.sent if r.disconnected_at < at < r.resumed_at]
            assert during, "nothing was captured while disconnected"
            assert result.sent[-1][0] == 6.0
            assert second.audio_bytes == round((6.0 - r.audio_offset) * RATE) * 2
            # each event in its place: reconnecting, resumed (server), SessionResumed, then finals
            order = [rec.index(k) for k in (Reconnecting, m.Resumed, SessionResumed)]
            assert order == sorted(order)

    asyncio.run(main())


def test_every_outage_is_resumed_on_its_own(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:
            drops = [after_final(1, WsTransport.abort, 0), after_final(3, WsTransport.abort, 1)]

            async def hook(transport: WsTransport, message: Msg) -> None:
                for drop in drops:
                    await drop(transport, message)

            server.on_sent = hook
            rec = Recorder()
            result = await stream(server, 7.0, StreamOptions(speed=4.0), rec)

            assert_complete(result, 7.0)
            assert len(server.transports) == 3 and server.transports[1].aborted
            assert [e.attempt for e in rec.of(Reconnecting)] == [1, 1]  # counted per outage
            first, second = result.resumes
            assert first.attempt == second.attempt == 1
            assert first.resumed_at < second.disconnected_at  # each outage timed on its own
            assert second.audio_offset >= first.audio_offset and second.next_seq > first.next_seq

    asyncio.run(main())


def test_fast_source_dropped_after_it_sent_everything_is_resumed(store: StoreFactory) -> None:
    """realtime=False: the whole file (and ``close``) may be on the wire when the server drops
    it; the client resends from the acked offset and closes again."""

    async def main() -> None:
        async with running_server(store) as server:

            def drop_at_3s(transport: WsTransport) -> bool:
                if transport.index == 0 and transport.audio_bytes >= 3 * RATE * 2:
                    transport.abort()
                    return True
                return False

            server.on_audio = drop_at_3s
            rec = Recorder()
            result = await stream(server, 5.0, StreamOptions(realtime=False), rec)
            assert_complete(result, 5.0)
            (r,) = result.resumes
            assert len(server.transports) == 2 and r.attempt == 1
            # the durable offset: acked, or persisted just before the drop cut the ack off
            assert 0.0 <= r.audio_offset <= 3.0
            assert server.transports[1].audio_bytes == round((5.0 - r.audio_offset) * RATE) * 2

    asyncio.run(main())


def test_replay_buffer_overflow_is_reported_as_a_gap_the_server_skips(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:
            server.on_sent = after_final(2, WsTransport.abort)  # the server's offset is then 2.0
            rec = Recorder()
            opts = StreamOptions(speed=2.0, replay_buffer_s=1.0)  # too short to reach back to it
            result = await stream(server, 6.0, opts, rec)

            assert result.error is None and result.close_code == 1000
            assert [f.seq for f in result.finals] == list(range(len(result.finals)))
            (r,) = result.resumes
            (gap,) = result.gaps
            assert result.gaps == rec.of(AudioGap)
            # from the server's durable offset to where the client's buffer starts
            assert gap.start_s in [a["audio_offset"] for a in server.transports[0].of("ack")]
            assert gap.start_s < gap.end_s == r.audio_offset
            assert server.transports[1].received[0]["audio_from"] == r.audio_offset
            assert server.transports[1].audio_bytes == round((6.0 - r.audio_offset) * RATE) * 2
            # words committed before the drop may run past the durable offset (the forced
            # words of the buffer the server still held); after the resume nothing is decoded
            # inside the lost audio
            before = [w for f in result.finals if f.seq < r.next_seq for w in f.words]
            after = [w for f in result.finals if f.seq >= r.next_seq for w in f.words]
            assert before and gap.start_s <= before[-1].end <= gap.end_s
            assert [w.word for w in before] == expected_words(before[-1].end)
            assert all(w.start >= gap.end_s - 1e-6 for w in after)
            # stream time stays aligned past the gap: words sit on the decoder's 0.5 s grid
            # from where the server resumed, up to the end of the audio
            assert after and 5.5 <= after[-1].end <= 6.0
            assert all(round((w.start - gap.end_s) / 0.5, 6).is_integer() for w in after)
            assert result.summary is not None and result.summary.audio_seconds == 6.0
            assert rec.index(AudioGap) < rec.index(SessionResumed)

    asyncio.run(main())


def test_store_unavailable_on_resume_is_retried_until_the_store_is_back(
    store: StoreFactory, own_redis: EmbeddedRedis
) -> None:
    async def main() -> None:
        async with running_server(store, url=own_redis.url) as server:
            restarts: list[asyncio.Task[None]] = []

            async def restart_later() -> None:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(own_redis.start)

            async def kill_redis_then_drop(transport: WsTransport) -> None:
                await asyncio.to_thread(own_redis.kill)
                restarts.append(asyncio.create_task(restart_later()))
                transport.abort()

            server.on_sent = after_final(1, kill_redis_then_drop)
            rec = Recorder()
            result = await stream(server, 8.0, StreamOptions(speed=4.0), rec)
            await asyncio.gather(*restarts)

            assert_complete(result, 8.0)
            tries = rec.of(Reconnecting)
            refused = [e for e in tries if e.reason.startswith("store_unavailable:")]
            assert refused, [e.reason for e in tries]
            assert [e.attempt for e in tries] == list(range(1, len(tries) + 1))
            (r,) = result.resumes
            assert r.attempt == len(tries) >= 2
            assert len(server.transports) == 1 + len(tries)
            assert all(t.of("error")[0]["code"] == "store_unavailable" for t in server.transports[1:-1])

    asyncio.run(main())


def test_drained_server_is_resumed_and_the_cli_prints_it_once(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:
            drains: list[asyncio.Task[None]] = []

            def drain(transport: WsTransport) -> None:
                assert transport.session is not None  # drain waits for the commit in progress
                drains.append(asyncio.create_task(transport.session.drain("test drain")))

            server.on_sent = after_final(2, drain)
            out = io.StringIO()
            rec = Recorder(printer(out=out))
            result = await stream(server, 6.0, StreamOptions(speed=4.0), rec)
            await asyncio.gather(*drains)

            assert_complete(result, 6.0)
            first, _ = server.transports
            assert first.sent[-1] == {"type": "reconnect", "reason": "test drain"}
            assert first.closed_with == 1012 and not first.aborted
            assert [(e.attempt, e.reason) for e in rec.of(Reconnecting)] == [(1, "server: test drain")]
            (r,) = result.resumes
            assert r.audio_offset in [0.0] + [a["audio_offset"] for a in first.of("ack")]

            lines = out.getvalue().splitlines()
            resumed = [line for line in lines if line.startswith("[resumed]")]
            assert resumed == [
                f"[resumed] session {result.session_id} after {r.downtime_s:.2f}s: "
                f"resending {r.resent_s:.1f}s from {r.audio_offset:.2f}s, "
                f"{r.missed_finals} missed finals replayed"
            ]
            assert [line for line in lines if line.startswith("[reconnecting]")] == [
                "[reconnecting] attempt 1: server: test drain"
            ]
            assert len([line for line in lines if line.startswith("FINAL")]) == len(result.finals)
            assert lines[0] == f"[ready] session {result.session_id}" and lines[-1].startswith("[closed]")

    asyncio.run(main())


@pytest.mark.parametrize(
    ("field", "value", "code", "close_code"),
    [
        ("token", "0" * 64, "invalid_resume_token", 4403),
        ("state", "closed", "session_closed", 4410),
    ],
    ids=["token-mismatch", "session-closed"],
)
def test_fatal_resume_error_ends_the_stream_without_retrying(
    store: StoreFactory, field: str, value: str, code: str, close_code: int
) -> None:
    async def main() -> None:
        async with running_server(store) as server:

            async def break_then_drop(transport: WsTransport) -> None:
                assert transport.session is not None
                await server.store.redis.hset(store.keys(transport.session.session_id)[0], field, value)
                transport.abort()

            server.on_sent = after_final(1, break_then_drop)
            rec = Recorder()
            began = time.monotonic()
            result = await stream(server, 20.0, StreamOptions(speed=4.0), rec)  # 5 s of audio
            took = time.monotonic() - began

            assert result.error is not None and result.error.code == code
            assert result.close_code == close_code and result.summary is None
            assert took < 4.0  # long before the audio ran out
            assert [e.attempt for e in rec.of(Reconnecting)] == [1]
            assert result.resumes == [] and rec.of(m.Error) == [result.error]
            assert [f.seq for f in result.finals] == list(range(len(result.finals)))
            assert words_of(result.finals) == expected_words(20.0)[: 2 * len(result.finals)]
            await asyncio.sleep(0.3)
            assert len(server.transports) == 2  # and it does not come back

    asyncio.run(main())


def test_reconnect_backs_off_while_the_server_refuses_then_resumes(
    store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # jitter factor 1.0: the delays are exactly backoff_initial_s * 2**n, capped
    monkeypatch.setattr(client_module, "random", types.SimpleNamespace(random=lambda: 0.5))

    async def main() -> None:
        async with running_server(store) as server:
            refused_s = 1.0

            def refuse_then_drop(transport: WsTransport) -> None:
                server.stop_listening()
                server.listen_again_in(refused_s)
                transport.abort()

            server.on_sent = after_final(1, refuse_then_drop)
            rec = Recorder()
            opts = StreamOptions(speed=4.0, backoff_initial_s=0.05, backoff_max_s=0.4)
            result = await stream(server, 8.0, opts, rec)

            assert_complete(result, 8.0)
            tries = rec.of(Reconnecting)
            assert [e.attempt for e in tries] == list(range(1, len(tries) + 1)) and len(tries) >= 3
            assert all("Refused" in e.reason for e in tries[1:]), [e.reason for e in tries]
            times = rec.times(Reconnecting)
            for n, (a, b) in enumerate(zip(times, times[1:], strict=False)):
                assert b - a >= 0.9 * min(0.05 * 2**n, 0.4), (n, b - a)
            (r,) = result.resumes
            assert r.attempt == len(tries)
            assert r.downtime_s >= 0.9 * refused_s
            assert len(server.transports) == 2

    asyncio.run(main())


def test_reconnect_gives_up_after_its_budget(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:

            def refuse_then_drop(transport: WsTransport) -> None:
                server.stop_listening()  # for good
                transport.abort()

            server.on_sent = after_final(1, refuse_then_drop)
            rec = Recorder()
            opts = StreamOptions(speed=4.0, reconnect_budget_s=0.3, backoff_initial_s=0.05)
            began = time.monotonic()
            result = await stream(server, 20.0, opts, rec)
            took = time.monotonic() - began

            assert result.error is not None and result.error.code == "reconnect_failed"
            assert "Refused" in result.error.message
            tries = rec.of(Reconnecting)
            assert [e.attempt for e in tries] == list(range(1, len(tries) + 1)) and len(tries) >= 2
            assert result.finished_at - rec.times(Reconnecting)[0] >= 0.3  # not before the budget
            assert result.resumes == [] and result.summary is None
            assert took < 4.0  # the budget, not the audio, ended it
            assert [f.seq for f in result.finals] == list(range(len(result.finals))) != []
            assert len(server.transports) == 1

    asyncio.run(main())


@pytest.mark.parametrize("bare", [False, True], ids=["error-then-1013", "bare-1013"])
@pytest.mark.parametrize("resume", [True, False], ids=["v1.1", "v1"])
def test_a_busy_server_is_asked_again_until_it_takes_the_stream(
    store: StoreFactory, bare: bool, resume: bool
) -> None:
    # a burst of streams meets a replica's session or pending-start limit (close 1013, "try
    # again later"): the SDK tries again with backoff instead of raising out of the stream
    async def main() -> None:
        async with running_server(store) as server:
            server.busy_first, server.busy_bare = 3, bare
            rec = Recorder()
            opts = StreamOptions(speed=4.0, resume=resume, backoff_initial_s=0.05)
            result = await stream(server, 4.0, opts, rec)

            assert_complete(result, 4.0)
            assert len(server.transports) == 4
            tries = rec.of(Reconnecting)
            assert [e.attempt for e in tries] == [1, 2, 3]
            assert all(("1013" if bare else "overloaded") in e.reason for e in tries), [
                e.reason for e in tries
            ]
            assert result.error is None and rec.of(m.Error) == []

    asyncio.run(main())


def test_a_server_busy_past_the_budget_ends_the_stream_with_its_typed_refusal(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:
            server.busy_first = 10**6
            rec = Recorder()
            opts = StreamOptions(speed=4.0, reconnect_budget_s=0.3, backoff_initial_s=0.05)
            began = time.monotonic()
            result = await stream(server, 20.0, opts, rec)

            assert result.error is not None and result.error.code == "overloaded"
            assert "retry later" in result.error.message
            assert rec.of(m.Error) == [result.error]  # handed to the caller once
            assert result.session_id is None and result.finals == [] and result.summary is None
            assert len(rec.of(Reconnecting)) >= 2
            assert time.monotonic() - began < 4.0  # the budget, not the audio, ended it

    asyncio.run(main())


def test_v1_client_gets_no_resume_and_a_drop_ends_the_stream(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:
            server.on_sent = after_final(1, WsTransport.abort)
            rec = Recorder()
            began = time.monotonic()
            result = await stream(server, 20.0, StreamOptions(speed=4.0, resume=False), rec)
            took = time.monotonic() - began

            (only,) = server.transports
            assert only.received[0]["type"] == "start" and only.received[0]["protocol"] == "v1"
            (ready,) = rec.of(m.Ready)
            assert ready.resume_token is None and "resume_token" not in only.sent[0]
            assert only.of("ack") == [] and rec.of(m.Ack) == []
            assert rec.of(Reconnecting) == [] and result.resumes == [] and result.gaps == []
            assert result.summary is None and result.close_code == 1006
            assert [f.seq for f in result.finals] == list(range(len(result.finals))) != []
            assert took < 4.0  # ended by the drop, not by the end of the audio
            await asyncio.sleep(0.3)
            assert len(server.transports) == 1  # it never reconnected

    asyncio.run(main())


def test_resume_that_is_never_answered_is_retried_within_the_budget(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:
            server.hang_resumes = True
            server.on_sent = after_final(1, WsTransport.abort)
            rec = Recorder()
            opts = StreamOptions(speed=4.0, open_timeout_s=0.3, reconnect_budget_s=0.5)
            began = time.monotonic()
            result = await stream(server, 20.0, opts, rec)
            took = time.monotonic() - began

            assert result.error is not None and result.error.code == "reconnect_failed"
            assert "Timeout" in result.error.message
            tries = rec.of(Reconnecting)
            assert [e.attempt for e in tries] == list(range(1, len(tries) + 1)) and len(tries) >= 2
            assert len(server.transports) == 1 + len(tries)  # each try was a connection, then given up
            assert result.resumes == [] and took < 4.0

    asyncio.run(main())
