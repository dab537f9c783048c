"""Protocol v1 message schemas: one module the server, SDK and load tester all import.

Every JSON message has a ``type`` discriminator.  Audio travels as binary frames.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Protocol = Literal["v1", "v1.1"]
PROTOCOL_VERSION: Protocol = "v1"
PROTOCOL_V1_1: Protocol = "v1.1"  # adds resume: resume_token, ack, resume/resumed, reconnect
Encoding = Literal["pcm_s16le", "f32le"]
# start.utterance_end_ms: shorter cuts utterances at breath pauses, longer delays a voice reply
UTTERANCE_END_MIN_MS, UTTERANCE_END_DEFAULT_MS, UTTERANCE_END_MAX_MS = 500, 1000, 5000
HOOK_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
MAX_CHANNELS = 8


class _Message(BaseModel):
    # the server validates client messages strictly: a typo is an error, not ignored
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ServerMessage(BaseModel):
    # clients tolerate fields added by newer servers (forward compatible)
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- client -> server -------------------------------------------------------------------


class Start(_Message):
    type: Literal["start"] = "start"
    sample_rate: int = Field(ge=8000, le=48000)
    encoding: Encoding = "pcm_s16le"
    # interleaved channels, each transcribed as its own stream (messages carry `channel`)
    channels: int = Field(1, ge=1, le=MAX_CHANNELS)
    interim_results: bool = True
    # "v1.1": the session is resumable (ready carries a resume_token, the server sends acks)
    protocol: Protocol = PROTOCOL_VERSION
    # voice-activity events (opt-in, either protocol): speech_started, utterance_end, and
    # speech_final on every final; off, a client sees exactly what it saw before
    vad_events: bool = False
    # silence after speech that ends an utterance (only with vad_events; None: the default)
    utterance_end_ms: int | None = Field(None, ge=UTTERANCE_END_MIN_MS, le=UTTERANCE_END_MAX_MS)
    # a server-side handler (one the server lists) that gets each completed utterance; its
    # replies come back as hook_result messages (needs vad_events: they end utterances)
    hook: str | None = Field(None, pattern=HOOK_NAME)

    @model_validator(mode="after")
    def _utterance_options_need_events(self) -> Start:
        if self.utterance_end_ms is not None and not self.vad_events:
            raise ValueError("utterance_end_ms needs vad_events: true")
        if self.hook is not None and not self.vad_events:
            raise ValueError("hook needs vad_events: true (voice activity ends each utterance)")
        if self.channels > 1 and self.protocol != PROTOCOL_VERSION:
            raise ValueError("a multi-channel session is not resumable yet: use protocol v1")
        return self

    def to_json(self) -> str:
        """The message as sent and stored: the opt-in fields only when asked for, so an older
        server (a rolling upgrade, a resume on an old replica) still accepts it."""
        unset = {"vad_events", "utterance_end_ms"} if not self.vad_events else set()
        unset |= {"hook"} if self.hook is None else set()
        return self.model_dump_json(exclude=unset)

    @property
    def utterance_end_s(self) -> float:
        """Silence that ends an utterance, in seconds."""
        return (self.utterance_end_ms or UTTERANCE_END_DEFAULT_MS) / 1000


class Resume(_Message):
    """Instead of ``start``: continue a session after a dropped connection (v1.1)."""

    type: Literal["resume"] = "resume"
    session_id: str = Field(min_length=1, max_length=64)
    resume_token: str = Field(min_length=1, max_length=128)
    last_seq: int = Field(-1, ge=-1)  # highest final seq the client holds; -1: none
    # the earliest stream second the client can still resend (its replay buffer overflowed
    # past the server's offset): the server skips the audio before it instead of waiting for it
    audio_from: float | None = Field(None, ge=0.0)


class Finalize(_Message):
    """Commit everything heard so far (end of an utterance); the stream stays open."""

    type: Literal["finalize"] = "finalize"


class Close(_Message):
    """End of stream: the server flushes, sends ``closed`` and closes with 1000."""

    type: Literal["close"] = "close"


class KeepAlive(_Message):
    type: Literal["keepalive"] = "keepalive"


ClientMessage = Annotated[Start | Resume | Finalize | Close | KeepAlive, Field(discriminator="type")]
CLIENT_MESSAGE: TypeAdapter[Start | Resume | Finalize | Close | KeepAlive] = TypeAdapter(ClientMessage)


# --- server -> client -------------------------------------------------------------------


class WordTiming(_ServerMessage):
    word: str
    start: float
    end: float
    probability: float


class Ready(_ServerMessage):
    type: Literal["ready"] = "ready"
    session_id: str
    protocol: str = PROTOCOL_VERSION
    sample_rate: int = 16000  # what the server transcribes at (it resamples)
    resume_token: str | None = None  # v1.1: present it in ``resume`` to continue this session
    channels: int | None = None  # multi-channel sessions only: how many streams it carries


class Partial(_ServerMessage):
    """Unstable text after the committed part; replaced by the next partial."""

    type: Literal["partial"] = "partial"
    text: str
    start: float
    end: float
    audio_end: float  # stream seconds of audio this hypothesis has seen
    channel: int | None = None  # multi-channel sessions only: the channel (0-based) it is about


class Final(_ServerMessage):
    """Committed text: never revised, never repeated."""

    type: Literal["final"] = "final"
    seq: int  # 0, 1, 2, ... per session
    text: str
    start: float
    end: float
    words: list[WordTiming]
    # vad_events sessions only (None is not sent): true on the final that closes an utterance
    speech_final: bool | None = None
    channel: int | None = None  # multi-channel sessions only: the channel (0-based) it is about


class SpeechStarted(_ServerMessage):
    """vad_events: speech began after silence, at stream second ``timestamp``."""

    type: Literal["speech_started"] = "speech_started"
    timestamp: float
    channel: int | None = None  # multi-channel sessions only: the channel (0-based) it is about


class UtteranceEnd(_ServerMessage):
    """vad_events: ``utterance_end_ms`` of silence followed the speech; the finals covering it
    were sent before this (the last with ``speech_final: true`` when the end committed words)."""

    type: Literal["utterance_end"] = "utterance_end"
    last_word_end: float  # stream seconds where the utterance's last word (or its speech) ended
    channel: int | None = None  # multi-channel sessions only: the channel (0-based) it is about


class Utterance(_ServerMessage):
    """A completed utterance (hooks): the text of finals ``seq_from``..``seq_to``."""

    session_id: str
    seq_from: int
    seq_to: int
    text: str
    start: float
    end: float


class HookResult(_ServerMessage):
    """The session's hook answered an utterance: ``result`` is the handler's JSON object."""

    type: Literal["hook_result"] = "hook_result"
    hook: str
    utterance: Utterance
    result: dict[str, Any]
    channel: int | None = None  # multi-channel sessions only: the channel (0-based) it is about


class HookError(_ServerMessage):
    """The hook failed on an utterance (``hook_failed``, ``hook_timeout``); the stream goes on."""

    type: Literal["hook_error"] = "hook_error"
    hook: str
    utterance: Utterance
    code: str
    message: str
    channel: int | None = None  # multi-channel sessions only: the channel (0-based) it is about


class Segment(_ServerMessage):
    """One final of a multi-channel session's merged transcript."""

    channel: int
    seq: int
    start: float
    end: float
    text: str


class Transcript(_ServerMessage):
    """Multi-channel sessions, before ``closed``: every channel's finals in time order (the
    meeting transcript, a line per final labelled with its channel), in one or more messages
    (at most 200 segments each; ``last`` on the final one)."""

    type: Literal["transcript"] = "transcript"
    segments: list[Segment]
    last: bool = True


class Flushed(_ServerMessage):
    """Sent after every ``finalize``: all audio up to ``audio_end`` has been committed."""

    type: Literal["flushed"] = "flushed"
    audio_end: float


class Ack(_ServerMessage):
    """v1.1: all audio before ``audio_offset`` (stream seconds) is committed and persisted;
    the client may drop it from its replay buffer."""

    type: Literal["ack"] = "ack"
    audio_offset: float


class Resumed(_ServerMessage):
    """v1.1 answer to ``resume``: resend audio from ``audio_offset``; finals the client
    missed (seq > last_seq) follow this message."""

    type: Literal["resumed"] = "resumed"
    session_id: str
    audio_offset: float
    next_seq: int  # seq of the next final; missed ones before it follow
    protocol: str = PROTOCOL_V1_1
    sample_rate: int = 16000
    skipped_from: float | None = None  # audio from here to audio_offset was lost (client's audio_from)


class Reconnect(_ServerMessage):
    """v1.1: this replica is going away; reconnect and resume (the close code is 1012)."""

    type: Literal["reconnect"] = "reconnect"
    reason: str


class Error(_ServerMessage):
    type: Literal["error"] = "error"
    code: str
    message: str


class Summary(_ServerMessage):
    session_id: str
    audio_seconds: float
    finals: int
    words: int
    decodes: int
    decode_seconds: float  # time spent waiting on the ASR deployment


class Closed(_ServerMessage):
    type: Literal["closed"] = "closed"
    summary: Summary


AnyServerMessage = (
    Ready
    | Resumed
    | Partial
    | Final
    | SpeechStarted
    | UtteranceEnd
    | HookResult
    | HookError
    | Transcript
    | Flushed
    | Ack
    | Reconnect
    | Error
    | Closed
)
ServerMessage = Annotated[AnyServerMessage, Field(discriminator="type")]
SERVER_MESSAGE: TypeAdapter[AnyServerMessage] = TypeAdapter(ServerMessage)
