"""Multi-channel sessions (issue 10): interleaved PCM split per channel by the sans-I/O
protocol; each channel transcribed as its own stream inside one session; every message
carries its channel; one ready, one flushed, one closed, and the merged transcript."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from deployments.session import StreamSession
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis, Word
from ingest import messages as m
from ingest.audio import encode_pcm
from ingest.protocol import AudioEvent, Limits, ServerProtocol
from tests.unit.test_session import NO_VAD, ScriptedSocket

SR = 16000


def start(channels: int, **fields: object) -> str:
    return json.dumps({"type": "start", "sample_rate": SR, "channels": channels, **fields})


def test_interleaved_frames_are_split_per_channel() -> None:
    server = ServerProtocol()
    server.receive_text(start(3))
    frames = np.stack([np.full(800, v, dtype=np.float32) for v in (0.1, -0.2, 0.3)], axis=1)
    server.receive_bytes(encode_pcm(frames, "pcm_s16le"), 0.0)
    server.receive_text('{"type": "close"}')
    rows = np.concatenate([e.samples for e in server.events_received() if isinstance(e, AudioEvent)], axis=1)
    assert rows.shape == (3, 800)  # 50 ms per channel, not 150 ms of one
    assert rows.mean(axis=1) == pytest.approx([0.1, -0.2, 0.3], abs=1e-3)
    assert server.ahead_s(0.0) == pytest.approx(0.05, abs=1e-6)  # quotas count frames


def test_a_frame_that_splits_a_sample_frame_is_refused() -> None:
    server = ServerProtocol()
    server.receive_text(start(2))
    server.receive_bytes(b"\x00\x00" * 3, 0.0)  # one and a half stereo frames
    assert server.close_code == 1003
    assert json.loads(server.data_to_send()[-1])["code"] == "unsupported_audio"


async def loud_words(req: DecodeRequest) -> Hypothesis:
    """A word per 0.5 s of audio that is loud, named by its loudness (which channel it is)."""
    words = []
    for i in range(len(req.audio) // 8000):
        part = req.audio[i * 8000 : (i + 1) * 8000]
        level = float(np.abs(part).mean())
        if level > 0.05:
            start = req.offset + i * 0.5
            words.append(Word(f" v{round(level * 10)}t{round(start * 2)}", start, start + 0.5))
    return Hypothesis(words)


def run(channels: np.ndarray, *control: str, decode=loud_words) -> ScriptedSocket:  # type: ignore[no-untyped-def]
    pcm = encode_pcm(channels, "pcm_s16le")
    step = int(0.1 * SR) * 2 * channels.shape[1]
    frames = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    sock = ScriptedSocket([start(channels.shape[1]), *frames, *control, '{"type": "close"}'])
    session = StreamSession("s1", sock, decode, PolicyConfig(step_s=1.0, vad=NO_VAD), Limits())
    asyncio.run(session.run())
    return sock


def two_speakers() -> np.ndarray:
    """Channel 0 speaks (level 0.2) for 0-3 s, channel 1 (level 0.4) for 2-5 s."""
    t = np.arange(5 * SR) / SR
    a = np.where(t < 3.0, 0.2, 0.0).astype(np.float32)
    b = np.where(t >= 2.0, 0.4, 0.0).astype(np.float32)
    return np.stack([a, b], axis=1)


def test_each_channel_is_its_own_stream_and_the_transcript_merges_them() -> None:
    sock = run(two_speakers(), '{"type": "finalize"}')
    kinds = [x["type"] for x in sock.sent]
    assert kinds[0] == "ready" and sock.sent[0]["channels"] == 2 and kinds.count("ready") == 1
    assert kinds.count("flushed") == 1 and kinds[-2:] == ["transcript", "closed"] and sock.close_code == 1000
    finals = [m.Final.model_validate(x) for x in sock.sent if x["type"] == "final"]
    partials = [x for x in sock.sent if x["type"] == "partial"]
    assert all(p["channel"] in (0, 1) for p in partials)
    by_channel = {c: [w.word for f in finals if f.channel == c for w in f.words] for c in (0, 1)}
    # nothing crosses: channel 0 heard only its level, channel 1 only its own, each word once
    assert by_channel[0] and all(w.startswith("v2") for w in by_channel[0])
    assert by_channel[1] and all(w.startswith("v4") for w in by_channel[1])
    assert [len(set(ws)) for ws in by_channel.values()] == [len(ws) for ws in by_channel.values()]
    assert len(by_channel[0]) == 6 and len(by_channel[1]) == 6  # 3 s each, a word per 0.5 s
    for c in (0, 1):  # each channel numbers its own finals
        assert [f.seq for f in finals if f.channel == c] == list(range(sum(f.channel == c for f in finals)))
    transcript = m.Transcript.model_validate(sock.sent[-2])
    assert sorted((s.channel, s.seq) for s in transcript.segments) == sorted(
        (f.channel, f.seq) for f in finals
    )
    assert [s.start for s in transcript.segments] == sorted(s.start for s in transcript.segments)
    summary = m.Closed.model_validate(sock.sent[-1]).summary
    assert summary.finals == len(finals) and summary.words == 12 and summary.audio_seconds == 5.0


def test_a_failing_channel_fails_the_session_with_its_error() -> None:
    async def second_channel_fails(req: DecodeRequest) -> Hypothesis:
        if float(np.abs(req.audio).max()) > 0.35:  # channel 1 speaks
            raise RuntimeError("decoder crashed")
        return await loud_words(req)

    sock = run(two_speakers(), decode=second_channel_fails)
    errors = [x for x in sock.sent if x["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "internal_error"
    assert sock.close_code == 1011 and "closed" not in [x["type"] for x in sock.sent]


def test_multi_channel_is_v1_only_and_at_most_eight() -> None:
    for fields in ({"channels": 2, "protocol": "v1.1"}, {"channels": 9}, {"channels": 0}):
        server = ServerProtocol()
        server.receive_text(json.dumps({"type": "start", "sample_rate": SR, **fields}))
        assert server.close_code == 1002


def test_sdk_keeps_every_channel_s_finals_and_events() -> None:
    """Each channel numbers its own finals and has its own voice events: the SDK's resume
    de-duplication (one stream) must not drop channel 1's seq 0 after channel 0's."""
    from ingest.client import StreamOptions, _Session

    stream = _Session("ws://127.0.0.1:1/v1/stream", SR, StreamOptions(channels=2, vad_events=True), None)
    start_msg = json.loads(stream.client.start_message())
    assert start_msg["channels"] == 2 and start_msg["protocol"] == "v1"  # not resumable yet
    heard = [
        m.SpeechStarted(timestamp=0.1, channel=0),
        m.SpeechStarted(timestamp=0.3, channel=1),
        m.Final(seq=0, text="a", start=0.1, end=0.5, words=[], channel=0),
        m.Final(seq=0, text="b", start=0.3, end=0.6, words=[], channel=1),
        m.UtteranceEnd(last_word_end=0.5, channel=0),
        m.UtteranceEnd(last_word_end=0.6, channel=1),
        m.Final(seq=1, text="c", start=1.0, end=1.5, words=[], channel=1),
    ]
    for message in heard:
        stream._record(message)
    assert [(f.channel, f.seq) for f in stream.result.finals] == [(0, 0), (1, 0), (1, 1)]
    assert len(stream.result.voice) == 4


def test_a_long_transcript_comes_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long meeting's transcript is sent in parts (bounded messages), ``last`` on the end."""
    from deployments import channels

    monkeypatch.setattr(channels, "TRANSCRIPT_PART", 2)
    sock = run(two_speakers())
    parts = [m.Transcript.model_validate(x) for x in sock.sent if x["type"] == "transcript"]
    finals = [x for x in sock.sent if x["type"] == "final"]
    assert len(parts) == -(-len(finals) // 2) > 1
    assert [p.last for p in parts] == [False] * (len(parts) - 1) + [True]
    assert all(len(p.segments) <= 2 for p in parts)
    assert sum(len(p.segments) for p in parts) == len(finals)
    assert [x["type"] for x in sock.sent][-1] == "closed"


def test_a_stereo_file_keeps_its_channels_for_the_cli(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`rayscribe meeting.wav --multichannel`: the file's channels stay apart (PyAV decode)."""
    import wave

    from ingest.sources import load_file

    t = np.arange(SR) / SR
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1)
    path = tmp_path / "meeting.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((stereo * 32767).astype("<i2").tobytes())
    kept = load_file(path, keep_channels=True).samples
    assert kept.shape == (SR, 2)
    assert np.abs(kept[:, 0]).max() > 0.4 and np.abs(kept[:, 1]).max() < 1e-3
    assert load_file(path).samples.shape == (SR,)  # mixed down otherwise
