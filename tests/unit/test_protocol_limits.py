"""Issue 8 probe findings at the protocol layer (sans-I/O): deep JSON, invalid UTF-8, audio far
ahead of real time, finalize floods and session length, each a typed error and close code."""

from __future__ import annotations

import json

import numpy as np

from ingest.errors import InvalidText, MessageTooBig, ProtocolError, RateLimited, SessionTooLong
from ingest.protocol import AudioEvent, FinalizeEvent, Limits, ServerProtocol, StartEvent, State

START = json.dumps({"type": "start", "sample_rate": 16000})
SECOND = np.zeros(16000, dtype="<i2").tobytes()  # 1 s of pcm_s16le at 16 kHz


def started(limits: Limits | None = None) -> ServerProtocol:
    p = ServerProtocol(limits or Limits())
    p.receive_text(START, now=0.0)
    assert [type(e) for e in p.events_received()] == [StartEvent]
    p.data_to_send()
    return p


def error_of(p: ServerProtocol) -> dict[str, object]:
    out: dict[str, object] = json.loads(p.data_to_send()[-1])
    assert out["type"] == "error"
    return out


def test_deeply_nested_json_is_a_protocol_error_not_an_internal_one() -> None:
    # the probe: under 16 KiB, deeper than the recursion limit -> it was internal_error / 1011
    p = ServerProtocol()
    p.receive_text("[" * 5000 + "]" * 5000)
    assert error_of(p)["code"] == "protocol_error" and p.close_code == ProtocolError.close_code == 1002


def test_deep_json_inside_a_string_is_not_nesting() -> None:
    p = ServerProtocol()
    p.receive_text(json.dumps({"type": "start", "sample_rate": 16000, "x": "[" * 100}))
    # the field is unknown (extra=forbid), so protocol_error, but for the field, not the depth
    assert "x" in str(error_of(p)["message"]) and "nested" not in str(p.error)


def test_moderately_nested_json_is_refused_before_parsing() -> None:
    p = ServerProtocol()
    p.receive_text('{"type": "start", "sample_rate": ' + "[" * 20 + "]" * 20 + "}")
    assert "nested" in str(error_of(p)["message"])


def test_invalid_utf8_text_frame_gets_a_typed_error_and_1007() -> None:
    p = ServerProtocol()
    p.receive_text_bytes(b'{"type": "start", "sample_rate": 16000, "x": "\xff\xfe"}')
    assert error_of(p)["code"] == "invalid_utf8" and p.close_code == InvalidText.close_code == 1007


def test_valid_utf8_text_bytes_parse_like_text() -> None:
    p = ServerProtocol()
    p.receive_text_bytes(START.encode())
    assert [type(e) for e in p.events_received()] == [StartEvent]


def test_oversized_text_bytes_are_refused_before_decoding() -> None:
    p = ServerProtocol(Limits(max_text_bytes=1024))
    p.receive_text_bytes(b"\xff" * 2048)
    assert error_of(p)["code"] == "message_too_big" and p.close_code == MessageTooBig.close_code


def test_audio_flood_is_refused_at_the_lead_before_it_is_buffered() -> None:
    p = started(Limits(max_speed=2.0, max_lead_s=10.0))
    taken = 0
    for _ in range(100):  # as fast as possible: all at t = 0
        p.receive_bytes(SECOND, now=0.0)
        if p.state == State.CLOSED:
            break
        taken += 1
    assert taken == 10, "exactly the lead is accepted"
    audio = [e for e in p.events_received() if isinstance(e, AudioEvent)]
    assert sum(len(e.samples) for e in audio) <= 10 * 16000  # the refused frame never became audio
    assert error_of(p)["code"] == "rate_limited" and p.close_code == RateLimited.close_code == 4429


def test_real_time_and_faster_within_the_factor_is_never_refused() -> None:
    p = started(Limits(max_speed=2.0, max_lead_s=1.0))
    for i in range(600):  # 10 minutes at 1.9x real time
        p.receive_bytes(SECOND, now=i / 1.9)
    assert p.state == State.STREAMING


def test_finalize_flood_is_rate_limited_but_a_normal_cadence_is_not() -> None:
    limits = Limits(finalize_burst=3, finalize_per_s=1.0)
    steady = started(limits)
    for i in range(30):  # one finalize per second: an utterance per second
        steady.receive_text('{"type": "finalize"}', now=float(i))
    assert steady.state == State.STREAMING
    assert sum(isinstance(e, FinalizeEvent) for e in steady.events_received()) == 30

    flood = started(limits)
    for i in range(10):  # after every 100 ms frame, as the probe did
        flood.receive_text('{"type": "finalize"}', now=i * 0.1)
    assert sum(isinstance(e, FinalizeEvent) for e in flood.events_received()) == 3
    assert error_of(flood)["code"] == "rate_limited" and flood.close_code == 4429


def test_session_length_counts_resumed_audio() -> None:
    p = ServerProtocol(Limits(max_session_s=100.0))
    p.receive_text('{"type": "resume", "session_id": "s", "resume_token": "t", "last_seq": -1}', now=0.0)
    p.events_received()
    from ingest import messages as m

    p.accept_resume(m.Start(sample_rate=16000), offset=98.0)
    p.receive_bytes(SECOND, now=0.0)
    p.receive_bytes(SECOND, now=0.0)
    assert p.state == State.STREAMING
    p.receive_bytes(SECOND, now=0.0)
    assert error_of(p)["code"] == "session_too_long" and p.close_code == SessionTooLong.close_code == 4413


def test_no_clock_no_time_quotas() -> None:
    """Callers that pass no ``now`` (tests, offline tools) get the v1 behaviour."""
    p = started(Limits(max_speed=1.0, max_lead_s=1.0))
    for _ in range(5):
        p.receive_bytes(SECOND)
    assert p.state == State.STREAMING


def test_how_far_audio_runs_ahead_of_real_time() -> None:
    p = started()
    assert p.ahead_s(5.0) == 0.0  # no audio yet
    for t in range(3):  # real-time pace: a second of audio each second
        p.receive_bytes(SECOND, now=float(t))
    assert p.ahead_s(3.0) == 0.0
    for _ in range(20):  # a burst: 20 s at once
        p.receive_bytes(SECOND, now=3.0)
    assert p.ahead_s(3.0) == 20.0 and p.ahead_s(13.0) == 10.0
