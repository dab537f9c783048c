"""Property tests (Hypothesis) on the sans-I/O protocol: any sequence of text/binary frames
gives valid events or exactly one typed error, never another exception, never a hang.

The default run is short (``max_examples`` below); ``HYPOTHESIS_PROFILE=fuzz`` (``make fuzz``)
runs many more examples."""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import messages as m
from ingest.errors import RayscribeError
from ingest.protocol import AudioEvent, ClientProtocol, Limits, ServerProtocol, State

settings.register_profile("default", max_examples=150, deadline=None)
settings.register_profile("fuzz", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
LIMITS = Limits(max_frame_bytes=4096, max_text_bytes=512, max_lead_s=2.0, finalize_burst=2)


def _subclasses(cls: type[RayscribeError]) -> list[type[RayscribeError]]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


CODES = {c.code: c.close_code for c in _subclasses(RayscribeError)}

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
message_types = st.sampled_from(["start", "resume", "finalize", "close", "keepalive", "shout", ""])
field_names = st.sampled_from(
    [
        "sample_rate",
        "encoding",
        "channels",
        "interim_results",
        "protocol",
        "session_id",
        "resume_token",
        "last_seq",
        "audio_from",
        "x",
    ]
)
near_valid = st.builds(
    lambda t, fields: json.dumps({"type": t, **fields}, allow_nan=True),
    message_types,
    st.dictionaries(
        field_names, json_values | st.sampled_from([16000, 8000, "f32le", "v1.1", -1]), max_size=4
    ),
)
text_frames = st.one_of(
    near_valid,
    st.text(max_size=600),
    st.just(json.dumps({"type": "start", "sample_rate": 16000})),
    st.just('{"type": "finalize"}'),
    st.just('{"type": "close"}'),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
)
binary_frames = st.one_of(st.binary(max_size=5000), st.integers(0, 3000).map(lambda n: bytes(2 * n)))
frames = st.lists(
    st.tuples(st.sampled_from(["text", "raw", "bytes"]), text_frames | binary_frames.map(lambda b: b)),
    max_size=25,
)


def feed(p: ServerProtocol, kind: str, payload: Any, now: float) -> None:
    if kind == "bytes":
        p.receive_bytes(
            payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass"), now
        )
    elif kind == "raw":
        p.receive_text_bytes(
            payload if isinstance(payload, bytes) else payload.encode("utf-8", "surrogatepass"), now
        )
    else:
        p.receive_text(payload if isinstance(payload, str) else payload.decode("latin-1"), now)


@given(frames)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_frame_sequence_gives_events_or_one_typed_error(sequence: list[tuple[str, Any]]) -> None:
    p = ServerProtocol(LIMITS)
    errors = 0
    began = time.monotonic()
    for i, (kind, payload) in enumerate(sequence):
        feed(p, kind, payload, now=i * 0.01)
        for event in p.events_received():
            if isinstance(event, AudioEvent):
                assert event.samples.dtype == np.float32 and np.isfinite(event.samples).all()
        for text in p.data_to_send():
            message = m.SERVER_MESSAGE.validate_json(text)  # what the server sends is valid
            assert isinstance(message, m.Error)
            errors += 1
            assert CODES[message.code] == p.close_code
    assert errors <= 1, "at most one error per connection"
    assert (errors == 1) == (p.state == State.CLOSED and p.error is not None)
    assert time.monotonic() - began < 5.0, "no frame sequence may take long"


@given(st.lists(st.integers(1, 9000), max_size=40), st.sampled_from([8000, 11025, 16000, 44100, 48000]))
def test_any_chunking_of_valid_audio_streams_without_error(sizes: list[int], rate: int) -> None:
    p = ServerProtocol(Limits(max_frame_bytes=1 << 20))
    p.receive_text(json.dumps({"type": "start", "sample_rate": rate}))
    for n in sizes:
        p.receive_bytes(np.zeros(n, dtype="<i2").tobytes())
    p.receive_text('{"type": "close"}')
    assert p.error is None and p.state == State.CLOSING


@given(st.text(max_size=300))
def test_client_parser_raises_only_typed_errors(text: str) -> None:
    client = ClientProtocol(m.Start(sample_rate=16000))
    with contextlib.suppress(RayscribeError):
        client.receive_text(text)


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deep_nesting_is_cheap_and_typed(depth: int) -> None:
    p = ServerProtocol(Limits(max_text_bytes=1 << 20))
    began = time.monotonic()
    p.receive_text("{" * depth)
    assert p.close_code == 1002 and time.monotonic() - began < 1.0
