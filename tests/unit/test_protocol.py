"""Protocol v1 state machine, driven without sockets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ingest import messages as m
from ingest.errors import MessageTooBig, ProtocolError, UnsupportedAudio
from ingest.protocol import (
    AudioEvent,
    ClientProtocol,
    CloseEvent,
    FinalizeEvent,
    Limits,
    ServerProtocol,
    StartEvent,
    State,
)

START = json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"})


def started(**start: object) -> ServerProtocol:
    p = ServerProtocol(Limits(max_frame_bytes=4096, max_text_bytes=512))
    p.receive_text(json.dumps({"type": "start", "sample_rate": 16000, **start}))
    assert [type(e) for e in p.events_received()] == [StartEvent]
    return p


def error_of(p: ServerProtocol) -> dict[str, object]:
    out = [json.loads(t) for t in p.data_to_send()]
    assert out[-1]["type"] == "error"
    return out[-1]


def test_start_then_audio_gives_16k_float_samples() -> None:
    p = started()
    assert p.state == State.STREAMING
    pcm = (np.arange(160, dtype=np.int16) * 100).astype("<i2").tobytes()
    p.receive_bytes(pcm)
    (event,) = p.events_received()
    assert isinstance(event, AudioEvent)
    np.testing.assert_allclose(event.samples, np.arange(160) * 100 / 32768.0, rtol=1e-6)


def test_resamples_8k_to_16k() -> None:
    p = started(sample_rate=8000, encoding="f32le")
    for _ in range(8):
        p.receive_bytes(np.zeros(1000, dtype="<f4").tobytes())
    p.receive_text('{"type": "close"}')
    events = p.events_received()
    total = sum(len(e.samples) for e in events if isinstance(e, AudioEvent))
    assert total == 16000
    assert isinstance(events[-1], CloseEvent)
    assert p.state == State.CLOSING


def test_finalize_and_keepalive() -> None:
    p = started()
    p.receive_text('{"type": "keepalive"}')
    p.receive_text('{"type": "finalize"}')
    assert [type(e) for e in p.events_received()] == [FinalizeEvent]
    assert p.close_code is None


@pytest.mark.parametrize(
    ("first", "code", "close"),
    [
        (b"\x00\x01", "protocol_error", 1002),  # audio before start
        ('{"type": "finalize"}', "protocol_error", 1002),  # control before start
        ('{"type": "hello"}', "protocol_error", 1002),  # unknown type
        ("not json", "protocol_error", 1002),
        ('["start"]', "protocol_error", 1002),
        ('{"type": "start", "sample_rate": 16000, "encoding": "mp3"}', "protocol_error", 1002),
        ('{"type": "start", "sample_rate": 4000}', "protocol_error", 1002),
        ('{"type": "start", "sample_rate": 16000, "channels": 2}', "protocol_error", 1002),
        ('{"type": "start", "sample_rate": 16000, "bogus": 1}', "protocol_error", 1002),
    ],
)
def test_bad_first_message_is_a_typed_error(first: str | bytes, code: str, close: int) -> None:
    p = ServerProtocol()
    if isinstance(first, bytes):
        p.receive_bytes(first)
    else:
        p.receive_text(first)
    assert error_of(p)["code"] == code
    assert p.close_code == close
    assert p.state == State.CLOSED
    assert p.events_received() == []


def test_nan_float_audio_is_unsupported_audio() -> None:
    p = started(encoding="f32le")
    p.receive_bytes(np.array([0.0, np.nan], dtype="<f4").tobytes())
    err = error_of(p)
    assert err["code"] == UnsupportedAudio.code and "NaN" in str(err["message"])
    assert p.close_code == 1003


def test_inf_float_audio_is_rejected() -> None:
    p = started(encoding="f32le")
    p.receive_bytes(np.array([np.inf], dtype="<f4").tobytes())
    assert p.close_code == 1003


def test_misaligned_frame_is_rejected() -> None:
    p = started()
    p.receive_bytes(b"\x00\x01\x02")
    assert error_of(p)["code"] == "unsupported_audio"


def test_oversized_frame_closes_1009() -> None:
    p = started()
    p.receive_bytes(b"\x00" * 4098)
    assert error_of(p)["code"] == MessageTooBig.code
    assert p.close_code == 1009


def test_oversized_text_closes_1009() -> None:
    p = started()
    p.receive_text(json.dumps({"type": "keepalive", "pad": "x" * 600}))
    assert p.close_code == 1009


def test_second_start_is_protocol_error() -> None:
    p = started()
    p.receive_text(START)
    assert error_of(p)["message"] == "start sent twice"


def test_input_after_close_is_ignored() -> None:
    p = started()
    p.receive_text('{"type": "close"}')
    p.events_received()
    p.receive_bytes(b"\x00\x00")
    assert p.events_received() == [] and p.data_to_send() == []


def test_server_messages_round_trip_through_client() -> None:
    server = started()
    server.send(m.Ready(session_id="abc"))
    server.send(m.Partial(text="hel", start=0.0, end=0.3, audio_end=1.0))
    server.send(
        m.Final(
            seq=0,
            text="hello",
            start=0.0,
            end=0.5,
            words=[m.WordTiming(word="hello", start=0.0, end=0.5, probability=0.9)],
        )
    )
    server.send_closed(
        m.Summary(session_id="abc", audio_seconds=1.0, finals=1, words=1, decodes=1, decode_seconds=0.1)
    )
    assert server.close_code == 1000
    client = ClientProtocol(m.Start(sample_rate=16000))
    got = [client.receive_text(t) for t in server.data_to_send()]
    assert [g.type for g in got] == ["ready", "partial", "final", "closed"]
    assert client.session_id == "abc" and client.closed
    with pytest.raises(ProtocolError):
        server.send(m.Ready(session_id="x"))


def test_client_rejects_malformed_server_message() -> None:
    client = ClientProtocol(m.Start(sample_rate=16000))
    with pytest.raises(ProtocolError):
        client.receive_text('{"type": "final", "text": 3}')
