"""The Deepgram adapter's pure parts: query parameters, client messages, and the translation of
our server messages into Deepgram's (checked against the official SDK's own message types)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from deployments.deepgram import ListenOptions, Translator, client_message, parse_options
from ingest import messages as m
from ingest.errors import ProtocolError, UnsupportedAudio

BASE = {"encoding": "linear16", "sample_rate": "16000"}


def test_supported_and_ignored_parameters_are_accepted() -> None:
    options = parse_options(
        {
            **BASE,
            "channels": "1",
            "interim_results": "true",
            "punctuate": "true",
            "smart_format": "true",
            "endpointing": "300",
            "utterance_end_ms": "1000",
            "vad_events": "true",
            "model": "nova-3",
            "language": "en-US",
            "diarize": "false",
        }
    )
    assert options == ListenOptions(16000, interim_results=True, utterance_end_ms=1000, vad_events=True)
    assert options.start() == m.Start(sample_rate=16000, interim_results=True, protocol="v1.1")
    assert parse_options(BASE).interim_results is False  # Deepgram's default


@pytest.mark.parametrize(
    ("query", "error", "says"),
    [
        ({**BASE, "diarize": "true"}, ProtocolError, "diarize=true is not supported"),
        ({**BASE, "keywords": "rayscribe:2"}, ProtocolError, "'keywords' is not supported"),
        ({**BASE, "language": "de"}, ProtocolError, "English only"),
        ({**BASE, "interim_results": "maybe"}, ProtocolError, "not a boolean"),
        ({**BASE, "utterance_end_ms": "500"}, ProtocolError, "at least 1000"),
        ({"encoding": "opus", "sample_rate": "48000"}, UnsupportedAudio, "encoding=opus is not supported"),
        ({"model": "nova-3"}, UnsupportedAudio, "encoding=(none)"),
        ({"encoding": "linear16"}, UnsupportedAudio, "sample_rate is required"),
        ({**BASE, "channels": "2"}, UnsupportedAudio, "channels=2"),
    ],
)
def test_unsupported_parameters_are_rejected_with_the_reason(
    query: dict[str, str], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=None) as caught:
        parse_options(query)
    assert says in str(caught.value)


def test_client_messages_map_onto_ours() -> None:
    assert json.loads(client_message('{"type": "KeepAlive"}')) == {"type": "keepalive"}
    assert json.loads(client_message('{"type": "Finalize"}')) == {"type": "finalize"}
    assert json.loads(client_message('{"type": "CloseStream"}')) == {"type": "close"}
    assert client_message('{"type": "Configure"}') == '{"type": "Configure"}'  # fails typed, downstream


def final(seq: int, words: list[tuple[str, float, float]]) -> str:
    timings = [m.WordTiming(word=w, start=s, end=e, probability=0.9) for w, s, e in words]
    text = " ".join(w for w, _, _ in words)
    return m.Final(seq=seq, text=text, start=words[0][1], end=words[-1][2], words=timings).model_dump_json()


def partial(text: str, start: float, end: float, audio_end: float) -> str:
    return m.Partial(text=text, start=start, end=end, audio_end=audio_end).model_dump_json()


def run(translator: Translator, *messages: str) -> list[dict[str, Any]]:
    return [json.loads(x) for msg in messages for x in translator.translate(msg)]


def sdk_parse(message: dict[str, Any]) -> Any:
    """Parse like deepgram-sdk 7.x's socket client does."""
    sdk = pytest.importorskip("deepgram.listen.v1.socket_client")
    from deepgram.core.unchecked_base_model import construct_type

    return construct_type(type_=sdk.V1SocketClientResponse, object_=message)


def test_partials_and_finals_become_results_the_sdk_parses() -> None:
    t = Translator(ListenOptions(16000, interim_results=True, utterance_end_ms=1000, vad_events=True))
    out = run(
        t,
        m.Ready(session_id="abc", protocol="v1.1", resume_token="t").model_dump_json(),
        partial("Hello", 0.3, 0.7, 1.0),
        final(0, [("Hello,", 0.3, 0.7)]),
        partial("world.", 0.8, 1.5, 2.0),  # words pending: not speech_final
        final(1, [("world.", 0.8, 1.5)]),
        partial("", 3.0, 3.0, 3.0),  # nothing pending, 1.5 s after the last word
        m.Ack(audio_offset=1.5).model_dump_json(),
    )
    kinds = [(o["type"], o.get("is_final"), o.get("speech_final")) for o in out]
    assert kinds == [
        ("SpeechStarted", None, None),
        ("Results", False, False),
        ("Results", True, False),
        ("Results", False, False),
        ("Results", True, True),
        ("UtteranceEnd", None, None),
    ]
    first, second = out[2], out[4]
    assert first["channel"]["alternatives"][0]["transcript"] == "Hello,"
    assert first["channel"]["alternatives"][0]["words"] == [
        {"word": "hello", "start": 0.3, "end": 0.7, "confidence": 0.9, "punctuated_word": "Hello,"}
    ]
    assert (first["start"], first["duration"]) == (0.0, 0.7)
    assert (second["start"], second["duration"]) == (0.7, 0.8)  # from the previous final's end
    assert first["metadata"]["request_id"] == "abc"
    assert out[5]["last_word_end"] == 1.5
    for o in out:
        parsed = sdk_parse(o)
        assert type(parsed).__name__ == f"ListenV1{o['type']}"
    assert sdk_parse(out[4]).channel.alternatives[0].words[0].punctuated_word == "world."


def test_finalize_and_close() -> None:
    t = Translator(ListenOptions(16000))  # interim_results off: partials are dropped
    t.finalize_requested()
    out = run(
        t,
        partial("one", 0.0, 0.5, 1.0),
        final(0, [("one", 0.0, 0.5)]),
        m.Flushed(audio_end=1.0).model_dump_json(),
        m.Flushed(audio_end=1.2).model_dump_json(),  # nothing left: an empty final result
    )
    assert [(o["is_final"], o["speech_final"], o["from_finalize"]) for o in out] == [
        (True, True, True),
        (True, True, False),
    ]
    assert out[1]["channel"]["alternatives"][0]["transcript"] == ""
    summary = m.Summary(session_id="abc", audio_seconds=9.5, finals=1, words=1, decodes=3, decode_seconds=0.1)
    [metadata] = run(t, m.Closed(summary=summary).model_dump_json())
    assert metadata["type"] == "Metadata" and metadata["duration"] == 9.5
    assert type(sdk_parse(metadata)).__name__ == "ListenV1Metadata"
    [error] = run(t, m.Error(code="overloaded", message="busy").model_dump_json())
    assert error == {"type": "Error", "variant": "overloaded", "description": "busy", "message": ""}


# --- the official SDK against the adapter on a loopback server (fake decoder, no Ray) ------


class _Socket:
    """StreamSession's Transport over one websockets server connection."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes | None:
        from websockets.exceptions import ConnectionClosed

        try:
            data: str | bytes = await self.ws.recv()
        except ConnectionClosed:
            return None
        return data

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def close(self, code: int) -> None:
        await self.ws.close(code)


def test_the_deepgram_sdk_parses_the_adapter_end_to_end() -> None:
    """deepgram-sdk 7.x -> /v1/listen adapter -> a real StreamSession (one word per 0.5 s)."""
    import threading
    import urllib.parse

    from deepgram import DeepgramClient
    from deepgram.core.events import EventType
    from deepgram.environment import DeepgramClientEnvironment
    from websockets.asyncio.server import serve

    from deployments.deepgram import DeepgramTransport, error_message
    from deployments.session import StreamSession
    from ingest.audio import encode_pcm
    from ingest.errors import RayscribeError
    from ingest.protocol import Limits
    from tests.unit.test_client_resume import POLICY, listening_decoder, speech

    headers: list[str] = []

    async def handle(ws: Any) -> None:
        headers.append(ws.request.headers.get("Authorization", ""))
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ws.request.path).query))
        try:
            options = parse_options(query)
        except RayscribeError as e:
            await ws.send(error_message(e.code, e.message))
            await ws.close(e.close_code)
            return
        session = StreamSession(
            "s1", DeepgramTransport(_Socket(ws), options), listening_decoder, POLICY, Limits()
        )
        await session.run()

    got: list[Any] = []
    closed = threading.Event()

    async def main() -> None:
        async with serve(handle, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            base = f"ws://127.0.0.1:{port}"
            env = DeepgramClientEnvironment(base=base, production=base, agent=base, agent_rest=base)

            def client() -> None:
                dg_client = DeepgramClient(api_key="k1", environment=env)
                with dg_client.listen.v1.connect(
                    model="nova-3", encoding="linear16", sample_rate="16000", interim_results="true"
                ) as conn:
                    conn.on(EventType.MESSAGE, got.append)
                    conn.on(EventType.CLOSE, lambda _: closed.set())
                    listener = threading.Thread(target=conn.start_listening, daemon=True)
                    listener.start()
                    for chunk in np.array_split(speech(3.0), 30):
                        conn.send_media(encode_pcm(chunk, "pcm_s16le"))
                    conn.send_finalize()
                    conn.send_keep_alive()
                    conn.send_close_stream()
                    closed.wait(20)
                    listener.join(5)

            await asyncio.to_thread(client)

    asyncio.run(main())
    assert headers == ["Token k1"]
    kinds = [type(x).__name__ for x in got]
    assert "ListenV1Results" in kinds and kinds[-1] == "ListenV1Metadata"
    finals = [x for x in got if type(x).__name__ == "ListenV1Results" and x.is_final]
    words = [w.word for r in finals for w in r.channel.alternatives[0].words]
    assert words == [f"w{i}" for i in range(6)]  # every word once, in order
    assert any(r.from_finalize for r in finals)
    assert got[-1].duration == 3.0
