"""Voice-activity events (start.vad_events): the messages, the pure utterance logic
(:class:`deployments.vad.VoiceEvents`) and a session on a scripted socket with a fake VAD that
calls loud audio speech.  The real Silero VAD is in tests/model/test_vad_events_silero.py."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import numpy as np
import pytest

from deployments import session as session_module
from deployments.vad import CHUNK, CHUNK_S, SpeechStart, UtteranceStop, VadConfig, VoiceEvents
from ingest import messages as m
from ingest.audio import encode_pcm
from ingest.cli import describe, main
from ingest.client import StreamOptions, _Session
from ingest.errors import ProtocolError
from ingest.protocol import ClientProtocol, ServerProtocol, StartEvent
from tests.unit.test_session import NO_VAD, ScriptedSocket, counting_decoder
from tests.unit.test_session_resume import WAIT_S, LiveSocket, open_session, resume_msg

if TYPE_CHECKING:
    from tests.unit.conftest import StoreFactory

SR = 16000
START_EVENTS = json.dumps({"type": "start", "sample_rate": SR, "vad_events": True})
CLOSE = '{"type": "close"}'

# --- messages -------------------------------------------------------------------------


def test_start_without_vad_events_is_sent_as_before() -> None:
    start = m.Start(sample_rate=SR)
    assert "vad_events" not in start.to_json() and "utterance_end_ms" not in start.to_json()
    assert json.loads(ClientProtocol(start).start_message()) == {
        "type": "start",
        "sample_rate": SR,
        "encoding": "pcm_s16le",
        "channels": 1,
        "interim_results": True,
        "protocol": "v1",
    }


def test_start_with_vad_events_parses_and_defaults_to_one_second() -> None:
    server = ServerProtocol()
    server.receive_text(START_EVENTS)
    (event,) = server.events_received()
    assert isinstance(event, StartEvent) and event.config.vad_events
    assert event.config.utterance_end_s == 1.0
    custom = m.Start(sample_rate=SR, vad_events=True, utterance_end_ms=1500)
    assert custom.utterance_end_s == 1.5
    assert json.loads(custom.to_json())["utterance_end_ms"] == 1500


@pytest.mark.parametrize(
    "fields",
    [
        {"utterance_end_ms": 1000},  # without vad_events
        {"vad_events": True, "utterance_end_ms": 100},
        {"vad_events": True, "utterance_end_ms": 9000},
        {"vad_events": "yes please"},
    ],
)
def test_bad_vad_options_are_a_protocol_error(fields: dict[str, object]) -> None:
    server = ServerProtocol()
    server.receive_text(json.dumps({"type": "start", "sample_rate": SR, **fields}))
    assert server.close_code == ProtocolError.close_code
    assert json.loads(server.data_to_send()[-1])["code"] == "protocol_error"


def test_client_parses_the_event_messages() -> None:
    client = ClientProtocol(m.Start(sample_rate=SR, vad_events=True))
    started = client.receive_text('{"type": "speech_started", "timestamp": 1.25}')
    assert started == m.SpeechStarted(timestamp=1.25)
    ended = client.receive_text('{"type": "utterance_end", "last_word_end": 3.5}')
    assert ended == m.UtteranceEnd(last_word_end=3.5)
    final = client.receive_text(
        '{"type": "final", "seq": 0, "text": "hi", "start": 0, "end": 1, "words": [], "speech_final": true}'
    )
    assert isinstance(final, m.Final) and final.speech_final is True


def test_a_final_without_events_carries_no_speech_final() -> None:
    server = ServerProtocol()
    server.send(m.Final(seq=0, text="hi", start=0.0, end=1.0, words=[]))
    assert "speech_final" not in server.data_to_send()[0]


# --- VoiceEvents (pure) ----------------------------------------------------------------


def chunks(seconds: float, p: float) -> list[float]:
    return [p] * round(seconds / CHUNK_S)


def fed(events: VoiceEvents, *parts: list[float]) -> list[SpeechStart | UtteranceStop]:
    return events.feed([p for part in parts for p in part])


def test_one_event_pair_per_utterance_with_pauses_inside_it() -> None:
    ev = VoiceEvents.create(VadConfig(), utterance_end_s=1.0)
    out = fed(
        ev,
        chunks(0.512, 0.0),
        chunks(0.64, 0.9),
        chunks(0.32, 0.1),  # a pause between words, shorter than utterance_end
        chunks(0.64, 0.9),
        chunks(0.96, 0.4),  # a quiet word ending: above neg_threshold, still speech
        chunks(1.6, 0.05),
    )
    assert [type(e) for e in out] == [SpeechStart, UtteranceStop]
    start, stop = out
    assert isinstance(start, SpeechStart) and isinstance(stop, UtteranceStop)
    assert start.timestamp == pytest.approx(0.512) and start.at == pytest.approx(0.512 + 3 * CHUNK_S)
    speech_end = 0.512 + 0.64 + 0.32 + 0.64 + 0.96
    assert stop.voice_end == pytest.approx(speech_end) and stop.began == pytest.approx(0.512)
    assert stop.at == pytest.approx(speech_end + 1.0, abs=CHUNK_S)


def test_a_click_starts_no_utterance() -> None:
    ev = VoiceEvents.create(VadConfig(), utterance_end_s=0.5)
    assert fed(ev, chunks(0.5, 0.0), chunks(2 * CHUNK_S, 0.95), chunks(2.0, 0.0)) == []


def test_events_come_at_their_chunk_across_feeds() -> None:
    ev = VoiceEvents.create(VadConfig(), utterance_end_s=0.5)
    seen = [e for p in chunks(0.32, 0.0) + chunks(0.64, 0.9) + chunks(1.0, 0.0) for e in ev.feed([p])]
    assert [type(e) for e in seen] == [SpeechStart, UtteranceStop]
    assert seen[1].at == pytest.approx(0.32 + 0.64 + 0.5, abs=CHUNK_S)


def test_resume_mid_speech_does_not_announce_it_again() -> None:
    ev = VoiceEvents.create(VadConfig(), utterance_end_s=1.0, start=7.0)
    out = fed(ev, chunks(0.64, 0.9), chunks(1.28, 0.0))
    assert [type(e) for e in out] == [UtteranceStop]  # the client was told it started before
    stop = out[0]
    assert isinstance(stop, UtteranceStop) and stop.voice_end == pytest.approx(7.64)


def test_resume_in_silence_announces_the_next_speech() -> None:
    ev = VoiceEvents.create(VadConfig(), utterance_end_s=1.0, start=7.0)
    out = fed(ev, chunks(0.64, 0.0), chunks(0.64, 0.9))
    assert len(out) == 1 and isinstance(out[0], SpeechStart)
    assert out[0].timestamp == pytest.approx(7.64)


# --- a session with a fake VAD ----------------------------------------------------------


class LoudIsSpeech:
    """Stands in for StreamVad: a 32 ms chunk is speech when it is loud."""

    made = 0

    def __init__(self) -> None:
        LoudIsSpeech.made += 1
        self.carry = np.zeros(0, dtype=np.float32)

    def process(self, samples: np.ndarray) -> list[float]:
        audio = np.concatenate([self.carry, samples])
        n = len(audio) // CHUNK
        self.carry = audio[n * CHUNK :]
        return [float(np.abs(audio[i * CHUNK : (i + 1) * CHUNK]).mean() > 0.1) for i in range(n)]


@pytest.fixture()
def fake_vad(monkeypatch: pytest.MonkeyPatch) -> type[LoudIsSpeech]:
    LoudIsSpeech.made = 0
    monkeypatch.setattr(session_module, "StreamVad", LoudIsSpeech)
    return LoudIsSpeech


def speech_and_pauses() -> np.ndarray:
    """0.5 s silence, 2 s speech, 1.5 s silence, 1 s speech, 1.5 s silence."""
    parts = [(0.5, 0.0), (2.0, 0.5), (1.5, 0.0), (1.0, 0.5), (1.5, 0.0)]
    return np.concatenate([np.full(int(s * SR), a, dtype=np.float32) for s, a in parts])


def run_session(start: str, frame_s: float) -> ScriptedSocket:
    pcm = encode_pcm(speech_and_pauses(), "pcm_s16le")
    step = int(frame_s * SR) * 2
    sock = ScriptedSocket([start, *(pcm[i : i + step] for i in range(0, len(pcm), step)), CLOSE])
    policy = session_module.PolicyConfig(step_s=1.0, vad=NO_VAD)  # as served: VAD off for decoding
    session = session_module.StreamSession("s1", sock, counting_decoder, policy, session_module.Limits())
    asyncio.run(session.run())
    return sock


@pytest.mark.parametrize("frame_s", [0.1, 8.0])  # live frames, and the whole stream in one frame
def test_session_sends_events_in_order_with_speech_final(
    fake_vad: type[LoudIsSpeech], frame_s: float
) -> None:
    sock = run_session(START_EVENTS, frame_s)
    events = [x for x in sock.sent if x["type"] in ("speech_started", "utterance_end", "final")]
    kinds = [x["type"] for x in events]
    # each utterance: speech_started, its finals, utterance_end right after the speech_final
    ends = [i for i, k in enumerate(kinds) if k == "utterance_end"]
    assert [k for k in kinds if k != "final"] == ["speech_started", "utterance_end"] * 2
    assert [x["timestamp"] for x in events if x["type"] == "speech_started"] == pytest.approx(
        [0.5, 4.0], abs=CHUNK_S
    )
    for i in ends:
        assert kinds[i - 1] == "final" and events[i - 1]["speech_final"] is True
        # the flush committed the utterance's audio and not beyond the event
        assert events[i - 1]["end"] <= {0: 3.5, 1: 6.0}[ends.index(i)] + 2 * CHUNK_S
    finals = [x for x in events if x["type"] == "final"]
    assert sum(x["speech_final"] for x in finals) == 2
    assert all(isinstance(x["speech_final"], bool) for x in finals)
    words = [w["word"] for f in finals for w in f["words"]]  # type: ignore[attr-defined]
    # 6.5 s at one word per 0.5 s: none twice (the fake decoder drops a word where a cut falls
    # between its 0.5 s steps, so 12 or 13)
    assert len(words) == len(set(words)) >= 12
    starts = [w["start"] for f in finals for w in f["words"]]  # type: ignore[attr-defined]
    assert starts == sorted(starts)
    last_word_ends = [x["last_word_end"] for x in events if x["type"] == "utterance_end"]
    # the fake decoder's words run on through the pauses: held to the speech end (2.5 s, 5 s)
    assert last_word_ends == pytest.approx([2.5, 5.0], abs=2 * CHUNK_S)
    assert sock.sent[-1]["type"] == "closed" and sock.close_code == 1000


def test_session_without_vad_events_sees_nothing_new(fake_vad: type[LoudIsSpeech]) -> None:
    sock = run_session(json.dumps({"type": "start", "sample_rate": SR}), 0.1)
    assert fake_vad.made == 0  # no VAD runs at all
    assert not [x for x in sock.sent if x["type"] in ("speech_started", "utterance_end")]
    assert not [x for x in sock.sent if "speech_final" in x]
    assert [x["type"] for x in sock.sent][-1] == "closed"


# --- SDK and CLI --------------------------------------------------------------------------


def test_sdk_asks_for_events_and_drops_a_repeat_after_a_resume() -> None:
    stream = _Session(
        "ws://127.0.0.1:1/v1/stream", SR, StreamOptions(vad_events=True, utterance_end_ms=700), None
    )
    start = json.loads(stream.client.start_message())
    assert start["vad_events"] is True and start["utterance_end_ms"] == 700
    heard = [
        m.SpeechStarted(timestamp=0.5),
        m.SpeechStarted(timestamp=0.52),  # a resumed connection's fresh VAD, same utterance
        m.UtteranceEnd(last_word_end=2.0),
        m.UtteranceEnd(last_word_end=2.0),
        m.SpeechStarted(timestamp=4.0),
    ]
    for message in heard:
        stream._record(message)
    assert [e for _, e in stream.result.voice] == [heard[0], heard[2], heard[4]]


def test_sdk_without_events_asks_for_none() -> None:
    stream = _Session("ws://127.0.0.1:1/v1/stream", SR, StreamOptions(utterance_end_ms=700), None)
    start = json.loads(stream.client.start_message())
    assert "vad_events" not in start and "utterance_end_ms" not in start


def test_cli_shows_the_events() -> None:
    assert describe(m.SpeechStarted(timestamp=1.5)) == "[speech started] 1.50s"
    assert describe(m.UtteranceEnd(last_word_end=3.25)) == "[utterance end] last word ended 3.25s"
    final = m.Final(seq=0, text="hi", start=0.0, end=1.0, words=[], speech_final=True)
    assert (describe(final) or "").endswith("hi  [speech_final]")
    assert "--vad-events" in main_help()


def main_help() -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["--help"])
    return out.getvalue()


# --- resume ---------------------------------------------------------------------------------


def frames(t0: float, t1: float, loud: bool) -> list[str | bytes]:
    samples = np.full(int(round((t1 - t0) * SR)), 0.5 if loud else 0.0, dtype=np.float32)
    pcm = encode_pcm(samples, "pcm_s16le")
    return [pcm[i : i + 8000] for i in range(0, len(pcm), 8000)]


def test_a_resume_mid_utterance_announces_no_second_start(
    fake_vad: type[LoudIsSpeech], store: StoreFactory
) -> None:
    start = json.dumps({"type": "start", "sample_rate": SR, "protocol": "v1.1", "vad_events": True})

    async def main() -> tuple[LiveSocket, LiveSocket]:
        async with store() as s:
            _, first, task = open_session(s)
            first.push(start, *frames(0.0, 3.0, loud=True))
            await first.wait_for(
                lambda: any(p["audio_end"] == 3.0 for p in first.of("partial")), "3 s decoded"
            )
            first.disconnect()  # mid-utterance
            await asyncio.wait_for(task, WAIT_S)
            sid, token = first.sent[0]["session_id"], first.sent[0]["resume_token"]
            last_seq = max(f["seq"] for f in first.of("final"))
            _, second, task = open_session(s, sid)
            second.push(resume_msg(sid, token, last_seq))
            await second.wait_for(lambda: bool(second.of("resumed")), "resumed")
            offset = second.of("resumed")[0]["audio_offset"]
            assert 0.0 < offset < 3.0  # the seam falls inside the speech
            second.push(*frames(offset, 4.0, loud=True), *frames(4.0, 6.0, loud=False), CLOSE)
            await asyncio.wait_for(task, WAIT_S)
            return first, second

    first, second = asyncio.run(main())
    assert [x["type"] for x in first.sent if x["type"] in ("speech_started", "utterance_end")] == [
        "speech_started"
    ]
    voice = [x for x in second.sent if x["type"] in ("speech_started", "utterance_end", "final")]
    assert [x["type"] for x in voice if x["type"] != "final"] == ["utterance_end"]
    end = next(i for i, x in enumerate(voice) if x["type"] == "utterance_end")
    assert voice[end - 1]["type"] == "final" and voice[end - 1]["speech_final"] is True
    assert voice[end]["last_word_end"] == pytest.approx(4.0, abs=2 * CHUNK_S)
