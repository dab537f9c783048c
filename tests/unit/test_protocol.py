"""Protocol v1 / v1.1 state machines, driven without sockets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import BaseModel

from ingest import messages as m
from ingest.errors import MessageTooBig, ProtocolError, UnsupportedAudio
from ingest.protocol import (
    AudioEvent,
    ClientProtocol,
    CloseEvent,
    FinalizeEvent,
    Limits,
    ResumeEvent,
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
    out: list[dict[str, object]] = [json.loads(t) for t in p.data_to_send()]
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
        ('{"type": "start", "sample_rate": 16000, "channels": 9}', "protocol_error", 1002),
        (
            '{"type": "start", "sample_rate": 16000, "channels": 2, "protocol": "v1.1"}',
            "protocol_error",
            1002,
        ),
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
    err = error_of(p)
    assert err["code"] == "protocol_error" and err["message"] == "start after the stream began"
    assert p.close_code == 1002


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


# --- v1.1: resume, ack, reconnect ---------------------------------------------------------

RESUME = {"type": "resume", "session_id": "abc", "resume_token": "tok", "last_seq": 4}
V1_1 = m.Start(sample_rate=8000, protocol=m.PROTOCOL_V1_1)


def resuming() -> ServerProtocol:
    p = ServerProtocol()
    p.receive_text(json.dumps(RESUME))
    return p


def test_resume_gives_a_resume_event_and_waits_in_resuming() -> None:
    p = resuming()
    (event,) = p.events_received()
    assert isinstance(event, ResumeEvent)
    assert event.request == m.Resume(session_id="abc", resume_token="tok", last_seq=4)
    assert p.state == State.RESUMING and p.config is None and not p.resumable
    assert p.close_code is None and p.data_to_send() == []


def test_resume_defaults_last_seq_to_none_received() -> None:
    p = ServerProtocol()
    p.receive_text('{"type": "resume", "session_id": "abc", "resume_token": "tok"}')
    (event,) = p.events_received()
    assert isinstance(event, ResumeEvent) and event.request.last_seq == -1


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00" * 10,
        '{"type": "finalize"}',
        '{"type": "close"}',
        json.dumps({"type": "start", "sample_rate": 16000}),
        json.dumps(RESUME),
    ],
)
def test_anything_but_keepalive_before_the_resume_is_accepted_is_a_protocol_error(data: str | bytes) -> None:
    p = resuming()
    p.events_received()
    p.receive_text('{"type": "keepalive"}')
    assert p.close_code is None
    if isinstance(data, bytes):
        p.receive_bytes(data)
    else:
        p.receive_text(data)
    err = error_of(p)
    assert err["code"] == "protocol_error" and p.close_code == 1002 and p.state == State.CLOSED
    assert p.events_received() == []
    if isinstance(data, bytes):
        assert err["message"] == "audio before resumed"


def test_accept_resume_streams_with_the_stored_config() -> None:
    p = resuming()
    p.events_received()
    p.accept_resume(V1_1)
    assert p.state == State.STREAMING and p.config == V1_1 and p.resumable
    for _ in range(4):  # the stored config's rate (8 kHz), not a default, drives resampling
        p.receive_bytes(np.zeros(2000, dtype="<i2").tobytes())
    p.receive_text('{"type": "close"}')
    events = p.events_received()
    assert sum(len(e.samples) for e in events if isinstance(e, AudioEvent)) == 16000
    assert isinstance(events[-1], CloseEvent)


def test_accept_resume_without_a_pending_resume_raises() -> None:
    with pytest.raises(ProtocolError):
        ServerProtocol().accept_resume(V1_1)
    p = started()
    with pytest.raises(ProtocolError):
        p.accept_resume(V1_1)
    assert p.config is not None and p.config.sample_rate == 16000  # unchanged


def test_resume_after_start_is_a_protocol_error() -> None:
    p = started(protocol="v1.1")
    p.receive_text(json.dumps(RESUME))
    assert error_of(p)["message"] == "resume after the stream began"
    assert p.close_code == 1002 and p.events_received() == []


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "resume", "session_id": "abc"},  # no token
        {**RESUME, "resume_token": ""},
        {**RESUME, "session_id": ""},
        {**RESUME, "last_seq": -2},
        {**RESUME, "epoch": 3},  # unknown field
        {"type": "start", "sample_rate": 16000, "protocol": "v2"},
    ],
)
def test_invalid_v1_1_messages_are_protocol_errors(bad: dict[str, object]) -> None:
    p = ServerProtocol()
    p.receive_text(json.dumps(bad))
    assert error_of(p)["code"] == "protocol_error" and p.close_code == 1002
    assert p.events_received() == []


def test_start_v1_1_is_resumable_and_v1_is_not() -> None:
    assert started(protocol="v1.1").resumable
    assert not started().resumable
    assert not started(protocol="v1").resumable


def test_reconnect_sends_reconnect_then_1012_for_v1_1() -> None:
    p = started(protocol="v1.1")
    p.reconnect("replica shutting down")
    out = [json.loads(t) for t in p.data_to_send()]
    assert out == [{"type": "reconnect", "reason": "replica shutting down"}]
    assert p.close_code == 1012 and p.state == State.CLOSED
    p.reconnect("again")  # closed: nothing more
    p.fail(ProtocolError("late"))
    assert p.data_to_send() == [] and p.close_code == 1012


def test_reconnect_of_a_resumed_session_sends_reconnect() -> None:
    p = resuming()
    p.accept_resume(V1_1)
    p.reconnect("drain")
    assert [json.loads(t)["type"] for t in p.data_to_send()] == ["reconnect"]
    assert p.close_code == 1012


def test_reconnect_is_only_1012_for_v1() -> None:
    p = started()
    p.reconnect("replica shutting down")
    assert p.data_to_send() == [] and p.close_code == 1012 and p.state == State.CLOSED


def test_reconnect_after_closed_keeps_the_normal_close() -> None:
    p = started(protocol="v1.1")
    p.send_closed(m.Summary(session_id="a", audio_seconds=0, finals=0, words=0, decodes=0, decode_seconds=0))
    p.data_to_send()
    p.reconnect("drain")
    assert p.data_to_send() == [] and p.close_code == 1000


def test_client_keeps_the_resume_token_and_builds_a_resume_the_server_accepts() -> None:
    server = started(protocol="v1.1")
    server.send(m.Ready(session_id="abc", protocol="v1.1", resume_token="tok-1"))
    client = ClientProtocol(m.Start(sample_rate=16000, protocol=m.PROTOCOL_V1_1))
    assert json.loads(client.start_message())["protocol"] == "v1.1"
    (ready,) = [client.receive_text(t) for t in server.data_to_send()]
    assert isinstance(ready, m.Ready) and ready.resume_token == "tok-1"
    assert client.session_id == "abc" and client.resume_token == "tok-1"

    client.receive_text(m.Error(code="internal_error", message="x").model_dump_json())
    assert client.closed
    text = client.resume_message(last_seq=7)
    assert not client.closed  # a new connection
    assert json.loads(text) == {"type": "resume", "session_id": "abc", "resume_token": "tok-1", "last_seq": 7}
    other = ServerProtocol()
    other.receive_text(text)
    (event,) = other.events_received()
    assert isinstance(event, ResumeEvent)
    assert event.request == m.Resume(session_id="abc", resume_token="tok-1", last_seq=7)


def test_client_cannot_resume_without_a_token() -> None:
    client = ClientProtocol(m.Start(sample_rate=16000))
    with pytest.raises(ProtocolError):
        client.resume_message(last_seq=-1)  # no ready yet
    client.receive_text(m.Ready(session_id="abc").model_dump_json())  # a v1 server: no token
    assert client.session_id == "abc" and client.resume_token is None
    with pytest.raises(ProtocolError):
        client.resume_message(last_seq=-1)


def test_v1_1_server_messages_round_trip_through_the_client() -> None:
    server = resuming()
    server.accept_resume(V1_1)
    sent: list[m.AnyServerMessage] = [
        m.Resumed(session_id="abc", audio_offset=2.5, next_seq=3),
        m.Ack(audio_offset=4.0),
        m.Reconnect(reason="drain"),
    ]
    for message in sent:
        server.send(message)
    client = ClientProtocol(V1_1)
    got = [client.receive_text(t) for t in server.data_to_send()]
    assert got == sent
    assert isinstance(got[0], m.Resumed) and got[0].protocol == "v1.1" and got[0].sample_rate == 16000
    assert not client.closed


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"type": "ready", "session_id": "a", "resume_token": "t", "region": "eu"}', m.Ready),
        ('{"type": "ack", "audio_offset": 1.5, "persisted_at": 12}', m.Ack),
        ('{"type": "resumed", "session_id": "a", "audio_offset": 0, "next_seq": 0, "epoch": 2}', m.Resumed),
        ('{"type": "reconnect", "reason": "r", "retry_after_s": 1}', m.Reconnect),
        ('{"type": "final", "seq": 0, "text": "", "start": 0, "end": 0, "words": [], "speaker": 1}', m.Final),
        ('{"type": "error", "code": "resume_conflict", "message": "m", "hint": "h"}', m.Error),
    ],
)
def test_client_tolerates_unknown_fields_from_newer_servers(text: str, kind: type[BaseModel]) -> None:
    client = ClientProtocol(V1_1)
    message = client.receive_text(text)
    assert isinstance(message, kind)
    extra = set(json.loads(text)) - set(kind.model_fields)
    assert len(extra) == 1 and not extra & set(message.model_dump())  # dropped, not kept


def test_client_rejects_an_unknown_server_message_type() -> None:
    client = ClientProtocol(V1_1)
    with pytest.raises(ProtocolError):
        client.receive_text('{"type": "teleport", "to": "mars"}')
