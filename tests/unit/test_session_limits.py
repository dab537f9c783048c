"""StreamSession limits on a scripted socket: handshake and idle timeouts, a client that stops
reading (superseded partials dropped, finals kept, slow_consumer), memory per session bounded,
and a resume under another API key refused."""

from __future__ import annotations

import asyncio
import json

from deployments.session import Deadlines, StreamSession
from deployments.streaming import PolicyConfig
from ingest.protocol import Limits
from tests.unit.test_session import NO_VAD, START, ScriptedSocket, audio_frames, counting_decoder


class SilentSocket(ScriptedSocket):
    """Delivers its script, then stays open and silent (never closes by itself)."""


class StalledReader(ScriptedSocket):
    """A client that stops reading after ``reads`` messages: later sends never complete."""

    def __init__(self, incoming: list[str | bytes], reads: int) -> None:
        super().__init__(incoming)
        self.reads = reads
        self.blocked = asyncio.Event()

    async def send_text(self, text: str) -> None:
        if len(self.sent) >= self.reads:
            self.blocked.set()
            await asyncio.Event().wait()  # the client's TCP window stays full
        await super().send_text(text)


def run(sock: ScriptedSocket, deadlines: Deadlines, decode=counting_decoder) -> StreamSession:  # type: ignore[no-untyped-def]
    session = StreamSession(
        "s1", sock, decode, PolicyConfig(step_s=1.0, vad=NO_VAD), Limits(), None, deadlines
    )

    async def go() -> None:
        await asyncio.wait_for(session.run(), 10.0)  # a hang fails the test instead of the suite

    asyncio.run(go())
    return session


def test_socket_that_never_sends_start_is_closed_by_the_handshake_timeout() -> None:
    sock = SilentSocket([])
    run(sock, Deadlines(handshake_s=0.2))
    assert sock.sent[-1]["code"] == "handshake_timeout" and sock.close_code == 4408


def test_started_stream_that_goes_silent_is_closed_by_the_idle_timeout() -> None:
    sock = SilentSocket([START, *audio_frames(0.5)])
    run(sock, Deadlines(idle_s=0.3))
    assert sock.sent[0]["type"] == "ready"
    assert sock.sent[-1]["code"] == "idle_timeout" and sock.close_code == 4408


def test_keepalive_keeps_a_silent_stream_open() -> None:
    frames: list[str | bytes] = [START, *['{"type": "keepalive"}'] * 5, '{"type": "close"}']

    class Paced(ScriptedSocket):
        async def receive(self) -> str | bytes | None:
            await asyncio.sleep(0.1)  # the client's keepalive cadence, under the idle timeout
            return await super().receive()

    sock = Paced(frames)
    run(sock, Deadlines(idle_s=0.3))
    assert sock.close_code == 1000


def test_a_client_that_stops_reading_is_closed_slow_consumer() -> None:
    sock = StalledReader([START, *audio_frames(20.0)], reads=2)
    session = run(sock, Deadlines(send_s=0.3))
    assert sock.close_code == 4008
    assert session.protocol.error is not None and session.protocol.error.code == "slow_consumer"


def test_a_client_that_lags_gets_every_final_and_only_current_partials() -> None:
    """The client reads nothing for 0.5 s mid-stream, then catches up: every final arrives
    once, in order; partials queued behind the stall that a newer one superseded are dropped."""

    class Lagging(ScriptedSocket):
        lagged = False

        async def send_text(self, text: str) -> None:
            if len(self.sent) == 3 and not self.lagged:
                self.lagged = True
                await asyncio.sleep(0.5)
            await super().send_text(text)

    sock = Lagging([START, *audio_frames(6.0), '{"type": "close"}'])
    session = run(sock, Deadlines(send_s=5.0))
    finals = [m for m in sock.sent if m["type"] == "final"]
    words = [w["word"] for m in finals for w in m["words"]]  # type: ignore[attr-defined]
    assert len(words) == 12 and [f["seq"] for f in finals] == list(range(len(finals)))
    assert sock.close_code == 1000 and sock.sent[-1]["type"] == "closed"
    partials = sum(m["type"] == "partial" for m in sock.sent)
    assert partials + session.dropped_partials <= session.stats.decodes


def test_coalesce_keeps_the_newest_partial_and_every_final() -> None:
    session = StreamSession("s", ScriptedSocket([]), counting_decoder, PolicyConfig(vad=NO_VAD), Limits())
    p = lambda i: json.dumps({"type": "partial", "text": str(i)}, separators=(",", ":"))  # noqa: E731
    f = lambda i: json.dumps({"type": "final", "seq": i}, separators=(",", ":"))  # noqa: E731
    out = session._coalesce([p(1), f(0), p(2), p(3), f(1), p(4)])
    assert out == [f(0), f(1), p(4)] and session.dropped_partials == 3


def test_outbound_bytes_per_session_stay_bounded_when_the_client_never_reads() -> None:
    """Memory per slow session: whatever the client sends, what waits to be sent is bounded
    (the producers block on the one pending send; the socket stops being read)."""
    sock = StalledReader([START, *audio_frames(60.0)], reads=1)
    session = run(sock, Deadlines(send_s=0.5, max_queued_bytes=8192))
    assert sock.close_code == 4008
    assert len(session.protocol.data_to_send()) <= 2  # nothing piled up behind the error
    assert len(sock.incoming) > 0, "the session stopped reading audio from a client it cannot answer"
