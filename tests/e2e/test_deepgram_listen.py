"""``/v1/listen`` with the official Deepgram SDK (deepgram-sdk 7.x from PyPI), pointed at the
local service by its base URL only, streaming an evalset clip: its own event callbacks get
interim and final results within the SDK's WER bound."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.audio import encode_pcm, read_wav
from ingest.wer import wer
from tests.e2e.clips import Clip, short_clip

pytestmark = [pytest.mark.e2e]
deepgram = pytest.importorskip("deepgram")
from deepgram import DeepgramClient  # noqa: E402
from deepgram.core.events import EventType  # noqa: E402
from deepgram.environment import DeepgramClientEnvironment  # noqa: E402


@pytest.fixture(scope="module")
def clip(evalset: Path) -> Clip:
    return short_clip(evalset)


def client_for(server_url: str) -> DeepgramClient:
    base = server_url.removesuffix("/v1/stream")
    http = base.replace("ws://", "http://")
    env = DeepgramClientEnvironment(base=http, production=base, agent=base, agent_rest=http)
    return DeepgramClient(api_key="test-key", environment=env)


class Collector:
    """What the SDK's callbacks received, with arrival times."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, Any]] = []
        self.closed = threading.Event()

    def on_message(self, message: Any) -> None:
        self.messages.append((time.monotonic(), message))

    def of(self, kind: str) -> list[Any]:
        return [msg for _, msg in self.messages if getattr(msg, "type", None) == kind]


def stream(server_url: str, audio_path: Path, speed: float = 2.0, **params: str) -> Collector:
    wav = read_wav(audio_path)
    got = Collector()
    with client_for(server_url).listen.v1.connect(model="nova-3", **params) as conn:
        conn.on(EventType.MESSAGE, got.on_message)
        conn.on(EventType.CLOSE, lambda _: got.closed.set())
        listener = threading.Thread(target=conn.start_listening, daemon=True)
        listener.start()
        step = wav.sample_rate // 10
        began = time.monotonic()
        for i, start in enumerate(range(0, len(wav.samples), step)):
            conn.send_media(encode_pcm(wav.samples[start : start + step], "pcm_s16le"))
            # pace like a live source (a clock, not a poll): chunk i is due at i * 0.1 s / speed
            time.sleep(max(0.0, began + (i + 1) * 0.1 / speed - time.monotonic()))
        conn.send_close_stream()
        assert got.closed.wait(60), "the server never closed the stream"
        listener.join(10)
    return got


def test_deepgram_sdk_streams_with_interim_and_final_results(server_url: str, clip: Clip) -> None:
    got = stream(
        server_url,
        clip.path,
        encoding="linear16",
        sample_rate="16000",
        interim_results="true",
        punctuate="true",
        smart_format="true",
        utterance_end_ms="1000",
        vad_events="true",
    )
    results = got.of("Results")
    interim = [r for r in results if not r.is_final]
    finals = [r for r in results if r.is_final]
    assert interim and finals
    first_final_at = next(at for at, r in got.messages if getattr(r, "is_final", False))
    assert any(at < first_final_at for at, r in got.messages if getattr(r, "is_final", None) is False)
    transcript = " ".join(r.channel.alternatives[0].transcript for r in finals).strip()
    assert wer([clip.text], [transcript]) <= clip.bound, (transcript, clip.offline_wer)
    words = [w for r in finals for w in r.channel.alternatives[0].words]
    assert words and all(w.end >= w.start for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    for r in finals:  # each final covers the audio after the previous one
        assert r.start >= 0 and r.duration >= 0
    assert finals[-1].speech_final
    [metadata] = got.of("Metadata")
    assert abs(metadata.duration - clip.duration_s) < 0.2 and metadata.request_id
    assert got.of("SpeechStarted"), "vad_events=true: SpeechStarted before speech"


def test_unsupported_parameter_is_a_clear_error(server_url: str) -> None:
    got = Collector()
    with client_for(server_url).listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate="16000", diarize="true"
    ) as conn:
        conn.on(EventType.MESSAGE, got.on_message)
        conn.on(EventType.CLOSE, lambda _: got.closed.set())
        conn.start_listening()  # returns when the server closes
    assert got.closed.is_set()
    [error] = got.of("Error")
    assert "diarize=true is not supported" in error.description
    assert not got.of("Results")
