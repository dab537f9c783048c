"""Protocol v1 as sans-I/O state machines: no sockets, no asyncio, no Ray.

Server side: feed what the socket received to :meth:`ServerProtocol.receive_text` /
:meth:`ServerProtocol.receive_bytes`, then

- call :meth:`ServerProtocol.events_received` and act on the events;
- call :meth:`ServerProtocol.data_to_send` and send each text frame;
- when :attr:`ServerProtocol.close_code` is set, close the socket with it.

Bad input never raises out of ``receive_*``: it queues a typed ``error`` message and sets
the close code of the error's class (see :mod:`ingest.errors`).

Quotas that depend on time (audio ahead of real time, ``finalize`` rate) take the caller's clock
reading as ``now``: the machine stays free of clocks, and a test can drive time by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from pydantic import ValidationError

from ingest import messages as m
from ingest.audio import BYTES_PER_SAMPLE, StreamResampler, decode_pcm
from ingest.errors import (
    CLOSE_NORMAL,
    CLOSE_SERVICE_RESTART,
    AheadOfRealTime,
    InvalidText,
    MessageTooBig,
    ProtocolError,
    RateLimited,
    RayscribeError,
    SessionTooLong,
    UnsupportedAudio,
)


class State(IntEnum):
    AWAITING_START = 0
    RESUMING = 1  # client sent resume; the server is loading the session
    STREAMING = 2
    CLOSING = 3  # client sent close; server is flushing
    CLOSED = 4


@dataclass(frozen=True)
class Limits:
    max_frame_bytes: int = 512 * 1024  # one binary audio frame
    max_text_bytes: int = 16 * 1024  # one JSON control message
    # audio may run ahead of real time by max_lead_s plus (max_speed - 1) x the time since the
    # first frame; beyond it the frame is refused before it is decoded or buffered.  The lead
    # covers a resume resending the client's replay buffer (the SDK keeps 60 s).
    max_speed: float = 4.0
    max_lead_s: float = 75.0
    max_session_s: float = 4 * 3600.0  # stream seconds of audio in one session (resumes included)
    # finalize costs a decode: a bucket of finalize_burst, refilled finalize_per_s
    finalize_burst: int = 5
    finalize_per_s: float = 1.0


class _Quota:
    """The time-dependent limits of one connection (audio lead, finalize rate)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.first_audio: float | None = None
        self.audio_s = 0.0  # received on this connection
        self.tokens = float(limits.finalize_burst)
        self.refilled: float | None = None

    def audio(self, seconds: float, now: float | None) -> None:
        if now is None:
            return
        if self.first_audio is None:
            self.first_audio = now
        allowed = self.limits.max_lead_s + self.limits.max_speed * (now - self.first_audio)
        if self.audio_s + seconds > allowed:
            raise AheadOfRealTime(
                f"audio is more than {self.limits.max_lead_s:.0f} s ahead of real time "
                f"(at most {self.limits.max_speed:g}x real time); send at real-time pace"
            )
        self.audio_s += seconds

    def ahead_s(self, now: float) -> float:
        """Seconds of audio received beyond real time since the first frame (0 before it)."""
        return 0.0 if self.first_audio is None else self.audio_s - (now - self.first_audio)

    def finalize(self, now: float | None) -> None:
        if now is None:
            return
        if self.refilled is not None:
            elapsed = max(0.0, now - self.refilled)
            self.tokens = min(
                float(self.limits.finalize_burst), self.tokens + elapsed * self.limits.finalize_per_s
            )
        self.refilled = now
        if self.tokens < 1.0:
            raise RateLimited(f"finalize more often than {self.limits.finalize_per_s:g} per second")
        self.tokens -= 1.0


@dataclass(frozen=True)
class StartEvent:
    config: m.Start


@dataclass(frozen=True)
class ResumeEvent:
    request: m.Resume


@dataclass(frozen=True)
class AudioEvent:
    samples: np.ndarray  # float32, 16 kHz: mono (n,), or one row per channel (channels, n)


@dataclass(frozen=True)
class FinalizeEvent:
    pass


@dataclass(frozen=True)
class CloseEvent:
    pass


Event = StartEvent | ResumeEvent | AudioEvent | FinalizeEvent | CloseEvent


class ServerProtocol:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.state = State.AWAITING_START
        self.config: m.Start | None = None
        self.close_code: int | None = None
        self.error: RayscribeError | None = None  # the error that ended the stream, if one did
        self._events: list[Event] = []
        self._out: list[str] = []
        self._resamplers: list[StreamResampler] = []  # one per channel, once started
        self._quota = _Quota(self.limits)
        self.stream_offset = 0.0  # stream seconds before this connection (a resume's offset)

    def ahead_s(self, now: float) -> float:
        """How far this connection's audio runs ahead of real time (``now``: the clock the
        frames were received with)."""
        return self._quota.ahead_s(now)

    # --- input ------------------------------------------------------------------------

    def receive_text(self, text: str, now: float | None = None) -> None:
        self._now = now
        self._guard(self._receive_text, text)

    def receive_text_bytes(self, data: bytes, now: float | None = None) -> None:
        """A text frame's raw payload (a transport that does not decode UTF-8 itself)."""
        self._now = now
        self._guard(self._decode_text, data)

    def receive_bytes(self, data: bytes, now: float | None = None) -> None:
        self._now = now
        self._guard(self._receive_bytes, data)

    _now: float | None = None  # the clock reading of the frame being handled

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _guard(self, handler: Callable[[Any], None], payload: str | bytes) -> None:
        if self.state in (State.CLOSING, State.CLOSED):
            return  # nothing the client says after close can change the outcome
        try:
            handler(payload)
        except RayscribeError as e:
            self.fail(e)

    def _decode_text(self, data: bytes) -> None:
        if len(data) > self.limits.max_text_bytes:
            raise MessageTooBig(f"control message over {self.limits.max_text_bytes} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidText(f"text frame is not valid UTF-8 (byte {e.start})") from e
        self._receive_text(text)

    def _receive_text(self, text: str) -> None:
        # surrogatepass: a str from a lenient transport may hold lone surrogates; measure, not fail
        if len(text) > self.limits.max_text_bytes or (
            len(text.encode("utf-8", "surrogatepass")) > self.limits.max_text_bytes
        ):
            raise MessageTooBig(f"control message over {self.limits.max_text_bytes} bytes")
        if _nesting(text) > _MAX_JSON_DEPTH:
            # control messages are flat; deep nesting would hit the recursion limit in json
            raise ProtocolError(f"control message nested deeper than {_MAX_JSON_DEPTH} levels")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ProtocolError(f"control message is not JSON: {e.msg}") from e
        except RecursionError as e:  # belt and braces: _nesting is the real guard
            raise ProtocolError("control message nested too deeply") from e
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise ProtocolError('control message must be a JSON object with a string "type"')
        if raw["type"] not in ("start", "resume", "finalize", "close", "keepalive"):
            raise ProtocolError(f"unknown message type {raw['type']!r}")
        try:
            message = m.CLIENT_MESSAGE.validate_python(raw)
        except ValidationError as e:
            raise ProtocolError(f"invalid {raw['type']} message: {_first_error(e)}") from e
        self._dispatch(message)

    def _dispatch(self, message: m.Start | m.Resume | m.Finalize | m.Close | m.KeepAlive) -> None:
        if isinstance(message, m.KeepAlive):
            return
        if isinstance(message, m.Start | m.Resume):
            if self.state != State.AWAITING_START:
                raise ProtocolError(f"{message.type} after the stream began")
            if isinstance(message, m.Start):
                self._begin(message)
                self._events.append(StartEvent(message))
            else:
                self.state = State.RESUMING
                self._events.append(ResumeEvent(message))
            return
        if self.state == State.RESUMING:
            raise ProtocolError(f"{message.type} before resumed")
        if self.state != State.STREAMING:
            raise ProtocolError(f"{message.type} before start")
        if isinstance(message, m.Finalize):
            self._quota.finalize(self._now)
            self._flush_resampler()
            self._events.append(FinalizeEvent())
        else:
            self._flush_resampler()
            self.state = State.CLOSING
            self._events.append(CloseEvent())

    def _receive_bytes(self, data: bytes) -> None:
        if len(data) > self.limits.max_frame_bytes:
            raise MessageTooBig(f"audio frame of {len(data)} bytes is over {self.limits.max_frame_bytes}")
        if self.state != State.STREAMING or self.config is None or not self._resamplers:
            before = "resumed" if self.state == State.RESUMING else "start"
            raise ProtocolError(f"audio before {before}")
        channels = self.config.channels
        frame = BYTES_PER_SAMPLE[self.config.encoding] * channels
        if len(data) % frame:
            whole = f"a whole number of {channels}-channel samples"
            raise UnsupportedAudio(f"a frame of {len(data)} bytes is not {whole}")
        # quotas are checked on the byte count, before the frame is decoded or buffered
        seconds = len(data) / frame / self.config.sample_rate
        limit = self.limits.max_session_s
        if self.stream_offset + self._quota.audio_s + seconds > limit:
            raise SessionTooLong(f"a session may carry at most {limit:.0f} s of audio; start a new one")
        self._quota.audio(seconds, self._now)
        pcm = decode_pcm(data, self.config.encoding)
        if channels == 1:
            samples = self._resamplers[0].push(pcm)
        else:  # interleaved: one row per channel (each resampler is fed the same length)
            samples = np.stack([r.push(pcm[i::channels]) for i, r in enumerate(self._resamplers)])
        if samples.size:
            self._events.append(AudioEvent(samples))

    def _begin(self, config: m.Start) -> None:
        self.config = config
        self._resamplers = [StreamResampler(config.sample_rate) for _ in range(config.channels)]
        self.state = State.STREAMING

    @property
    def resumable(self) -> bool:
        """The client speaks v1.1: it gets a resume token and acks."""
        return self.config is not None and self.config.protocol == m.PROTOCOL_V1_1

    def accept_resume(self, config: m.Start, offset: float = 0.0) -> None:
        """The session behind a ``resume`` was loaded: stream on with its original config from
        stream second ``offset``."""
        if self.state != State.RESUMING:
            raise ProtocolError("accept_resume without a pending resume")
        self.stream_offset = offset
        self._begin(config)

    def _flush_resampler(self) -> None:
        if not self._resamplers:
            return
        tails = [r.flush() for r in self._resamplers]
        self._resamplers = [StreamResampler(r.rate_in) for r in self._resamplers]
        if tails[0].size:
            self._events.append(AudioEvent(tails[0] if len(tails) == 1 else np.stack(tails)))

    # --- output -----------------------------------------------------------------------

    def data_to_send(self) -> list[str]:
        out, self._out = self._out, []
        return out

    def send(self, message: m.AnyServerMessage) -> None:
        if self.state == State.CLOSED:
            raise ProtocolError(f"cannot send {message.type}: the stream is closed")
        # exclude_none: a v1 client never sees a v1.1 field (ready.resume_token)
        self._out.append(message.model_dump_json(exclude_none=True))

    def send_closed(self, summary: m.Summary) -> None:
        self.send(m.Closed(summary=summary))
        self.state = State.CLOSED
        self.close_code = CLOSE_NORMAL

    def reconnect(self, reason: str) -> None:
        """Tell the client to reconnect and resume elsewhere; close with 1012."""
        if self.state == State.CLOSED:
            return
        if self.resumable:
            self._out.append(m.Reconnect(reason=reason).model_dump_json())
        self.state = State.CLOSED
        self.close_code = CLOSE_SERVICE_RESTART

    def fail(self, error: RayscribeError) -> None:
        """Queue a typed ``error`` message and close with the error's code."""
        if self.state == State.CLOSED:
            return
        self._out.append(m.Error(code=error.code, message=error.message).model_dump_json())
        self.error = error
        self.state = State.CLOSED
        self.close_code = error.close_code


_MAX_JSON_DEPTH = 8


def _nesting(text: str) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text, outside strings (C-speed for flat text)."""
    if text.count("[") + text.count("{") <= _MAX_JSON_DEPTH:
        return 0  # cannot be deeper than the brackets it holds
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


class ClientProtocol:
    """Client side: builds frames to send and parses what the server sends back."""

    def __init__(self, start: m.Start) -> None:
        self.start = start
        self.session_id: str | None = None
        self.resume_token: str | None = None
        self.closed = False

    def start_message(self) -> str:
        return self.start.to_json()

    def resume_message(self, last_seq: int, audio_from: float | None = None) -> str:
        if self.session_id is None or self.resume_token is None:
            raise ProtocolError("cannot resume: the server gave this session no resume token")
        self.closed = False
        resume = m.Resume(
            session_id=self.session_id,
            resume_token=self.resume_token,
            last_seq=last_seq,
            audio_from=audio_from,
        )
        return resume.model_dump_json(exclude_none=True)

    @staticmethod
    def control(message: m.Finalize | m.Close | m.KeepAlive) -> str:
        return message.model_dump_json()

    def receive_text(self, text: str) -> m.AnyServerMessage:
        try:
            message = m.SERVER_MESSAGE.validate_json(text)
        except ValidationError as e:
            raise ProtocolError(f"server sent an invalid message: {_first_error(e)}") from e
        if isinstance(message, m.Ready):
            self.session_id = message.session_id
            self.resume_token = message.resume_token
        elif isinstance(message, m.Closed | m.Error):
            self.closed = True
        return message
