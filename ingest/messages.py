"""Protocol v1 message schemas: one module the server, SDK and load tester all import.

Every JSON message has a ``type`` discriminator.  Audio travels as binary frames.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = "v1"
Encoding = Literal["pcm_s16le", "f32le"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- client -> server -------------------------------------------------------------------


class Start(_Message):
    type: Literal["start"] = "start"
    sample_rate: int = Field(ge=8000, le=48000)
    encoding: Encoding = "pcm_s16le"
    channels: Literal[1] = 1
    interim_results: bool = True


class Finalize(_Message):
    """Commit everything heard so far (end of an utterance); the stream stays open."""

    type: Literal["finalize"] = "finalize"


class Close(_Message):
    """End of stream: the server flushes, sends ``closed`` and closes with 1000."""

    type: Literal["close"] = "close"


class KeepAlive(_Message):
    type: Literal["keepalive"] = "keepalive"


ClientMessage = Annotated[Start | Finalize | Close | KeepAlive, Field(discriminator="type")]
CLIENT_MESSAGE: TypeAdapter[Start | Finalize | Close | KeepAlive] = TypeAdapter(ClientMessage)


# --- server -> client -------------------------------------------------------------------


class WordTiming(_Message):
    word: str
    start: float
    end: float
    probability: float


class Ready(_Message):
    type: Literal["ready"] = "ready"
    session_id: str
    protocol: str = PROTOCOL_VERSION
    sample_rate: int = 16000  # what the server transcribes at (it resamples)


class Partial(_Message):
    """Unstable text after the committed part; replaced by the next partial."""

    type: Literal["partial"] = "partial"
    text: str
    start: float
    end: float
    audio_end: float  # stream seconds of audio this hypothesis has seen


class Final(_Message):
    """Committed text: never revised, never repeated."""

    type: Literal["final"] = "final"
    seq: int  # 0, 1, 2, ... per session
    text: str
    start: float
    end: float
    words: list[WordTiming]


class Flushed(_Message):
    """Sent after every ``finalize``: all audio up to ``audio_end`` has been committed."""

    type: Literal["flushed"] = "flushed"
    audio_end: float


class Error(_Message):
    type: Literal["error"] = "error"
    code: str
    message: str


class Summary(_Message):
    session_id: str
    audio_seconds: float
    finals: int
    words: int
    decodes: int
    decode_seconds: float  # time spent waiting on the ASR deployment


class Closed(_Message):
    type: Literal["closed"] = "closed"
    summary: Summary


ServerMessage = Annotated[Ready | Partial | Final | Flushed | Error | Closed, Field(discriminator="type")]
SERVER_MESSAGE: TypeAdapter[Ready | Partial | Final | Flushed | Error | Closed] = TypeAdapter(ServerMessage)
