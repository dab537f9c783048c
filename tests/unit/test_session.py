"""StreamSession on a scripted transport and decoder: the serving plane without Ray.

The decoder here is a small fake that "hears" a fixed word every 0.5 s of audio, so the
policy and message flow can be checked exactly; the real model is tested in tests/model
and end to end in tests/e2e.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np

from deployments.session import StreamSession
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis, Word
from deployments.vad import VadConfig
from ingest.audio import encode_pcm
from ingest.protocol import Limits

NO_VAD = VadConfig(enabled=False)  # silent fake audio: the serving plane, not the VAD, is under test

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]


class ScriptedSocket:
    def __init__(self, incoming: list[str | bytes]) -> None:
        self.incoming = list(incoming)
        self.sent: list[dict[str, object]] = []
        self.close_code: int | None = None
        self.gone = asyncio.Event()
        self.drained = asyncio.Event()  # everything scripted has been delivered

    async def receive(self) -> str | bytes | None:
        if self.incoming:
            await asyncio.sleep(0)
            return self.incoming.pop(0)
        self.drained.set()
        await self.gone.wait()  # a client that stays connected until the server closes
        return None

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int) -> None:
        self.close_code = code
        self.gone.set()


async def counting_decoder(req: DecodeRequest) -> Hypothesis:
    """One word per full 0.5 s of audio, timed by position in the stream."""
    n = int(len(req.audio) / 8000)
    first = int(round(req.offset / 0.5))
    return Hypothesis(
        [Word(" " + word(first + i), req.offset + i * 0.5, req.offset + (i + 1) * 0.5) for i in range(n)]
    )


def word(i: int) -> str:
    return WORDS[i] if i < len(WORDS) else f"w{i}"


def run(incoming: list[str | bytes], decode=counting_decoder, sock=None, policy=None) -> ScriptedSocket:  # type: ignore[no-untyped-def]
    sock = sock or ScriptedSocket(incoming)
    session = StreamSession("s1", sock, decode, policy or PolicyConfig(step_s=1.0, vad=NO_VAD), Limits())
    asyncio.run(session.run())
    return sock


def audio_frames(seconds: float) -> list[str | bytes]:
    pcm = encode_pcm(np.zeros(int(seconds * 16000), dtype=np.float32), "pcm_s16le")
    return [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]


START = json.dumps({"type": "start", "sample_rate": 16000})


def test_transcript_is_complete_and_never_duplicated() -> None:
    sock = run([START, *audio_frames(5.0), '{"type": "close"}'])
    types = [m["type"] for m in sock.sent]
    assert types[0] == "ready" and types[-1] == "closed" and sock.close_code == 1000
    finals = [m for m in sock.sent if m["type"] == "final"]
    words = [w["word"] for f in finals for w in f["words"]]  # type: ignore[attr-defined]
    assert words == WORDS[:10]
    assert [f["seq"] for f in finals] == list(range(len(finals)))
    assert sock.sent[-1]["summary"]["words"] == 10  # type: ignore[index]


def test_finalize_flushes_then_streaming_continues() -> None:
    sock = run([START, *audio_frames(2.0), '{"type": "finalize"}', *audio_frames(1.0), '{"type": "close"}'])
    flushed = next(i for i, m in enumerate(sock.sent) if m["type"] == "flushed")
    assert sock.sent[flushed]["audio_end"] == 2.0
    before = [w["word"] for m in sock.sent[:flushed] if m["type"] == "final" for w in m["words"]]  # type: ignore[attr-defined]
    assert before == WORDS[:4]
    after = [w["word"] for m in sock.sent[flushed:] if m["type"] == "final" for w in m["words"]]  # type: ignore[attr-defined]
    assert after == WORDS[4:6]


def test_interim_results_off_sends_no_partials() -> None:
    start = json.dumps({"type": "start", "sample_rate": 16000, "interim_results": False})
    sock = run([start, *audio_frames(3.0), '{"type": "close"}'])
    assert not [m for m in sock.sent if m["type"] == "partial"]
    assert [m for m in sock.sent if m["type"] == "final"]


def test_decoder_failure_is_an_internal_error_without_details() -> None:
    async def broken(req: DecodeRequest) -> Hypothesis:
        raise ValueError("secret stack detail")

    sock = run([START, *audio_frames(3.0)], decode=broken)
    err = sock.sent[-1]
    assert err["type"] == "error" and err["code"] == "internal_error"
    assert "secret" not in str(err["message"])
    assert sock.close_code == 1011


def test_bad_frame_mid_stream_closes_with_its_code() -> None:
    sock = run([START, *audio_frames(0.5), b"\x01\x02\x03"])
    assert sock.sent[-1]["code"] == "unsupported_audio" and sock.close_code == 1003


class BacklogSocket(ScriptedSocket):
    """Flags when every audio frame was delivered and only the final ``close`` is left."""

    def __init__(self, incoming: list[str | bytes]) -> None:
        super().__init__(incoming)
        self.backlog_in = asyncio.Event()

    async def receive(self) -> str | bytes | None:
        if len(self.incoming) == 1:
            self.backlog_in.set()
        return await super().receive()


def test_a_backlog_longer_than_the_model_window_is_decoded_30_s_at_a_time() -> None:
    """The first decode is held until 70 s of audio has arrived (a resume resending a long
    backlog, or a stream far behind): it is decoded window by window, nothing lost or doubled."""
    sock = BacklogSocket([START, *audio_frames(70.0), '{"type": "close"}'])
    seen: list[float] = []

    async def stuck(req: DecodeRequest) -> Hypothesis:
        await sock.backlog_in.wait()
        seen.append(len(req.audio) / 16000)
        return await counting_decoder(req)

    run([], decode=stuck, sock=sock)
    assert sock.close_code == 1000, sock.sent[-1]
    assert max(seen) <= 30.0  # no decode saw more than the model's window
    words = [w["word"] for m in sock.sent if m["type"] == "final" for w in m["words"]]  # type: ignore[attr-defined]
    assert words == [word(i) for i in range(140)]


def test_stream_past_the_backlog_limit_is_closed_overloaded() -> None:
    """Past max_backlog_s the stream is refused with 1013 instead of holding the audio."""
    sock = ScriptedSocket([START, *audio_frames(40.0)])

    async def stuck(req: DecodeRequest) -> Hypothesis:
        await sock.drained.wait()
        return await counting_decoder(req)

    run([], decode=stuck, sock=sock, policy=PolicyConfig(max_backlog_s=35.0, vad=NO_VAD))
    err = sock.sent[-1]
    assert err["type"] == "error" and err["code"] == "overloaded"
    assert sock.close_code == 1013


def test_the_session_times_its_decodes_for_the_cadence() -> None:
    """The policy's cadence follows the decodes the session waited for: quick ones keep the
    fast step, slow ones (a loaded engine) the full step."""

    def slowed(seconds: float):  # type: ignore[no-untyped-def]
        async def decode(req: DecodeRequest) -> Hypothesis:
            await asyncio.sleep(seconds)  # the engine's time, as the session sees it
            return await counting_decoder(req)

        return decode

    for took, step in ((0.0, 0.25), (0.4, 1.0)):
        policy = PolicyConfig(step_s=1.0, fast_step_s=0.25, vad=NO_VAD)
        sock = ScriptedSocket([START, *audio_frames(3.0), '{"type": "close"}'])
        session = StreamSession("s1", sock, slowed(took), policy, Limits())
        asyncio.run(session.run())
        assert session.policy.decode_s is not None and session.policy.step_s == step
        words = [w["word"] for m in sock.sent if m["type"] == "final" for w in m["words"]]  # type: ignore[attr-defined]
        assert words == WORDS[:6]
