"""Deepgram live-streaming (``/v1/listen``) wire messages: the subset rayscribe speaks.

Server -> client: ``Results``, ``Metadata``, ``UtteranceEnd``, ``SpeechStarted``, ``Error``.
Client -> server: ``KeepAlive``, ``Finalize``, ``CloseStream`` (JSON text); audio as binary.
Field names and shapes follow Deepgram's API so its SDKs parse them unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

MODEL_NAME = "whisper-tiny.en"
MODEL_INFO = {"name": MODEL_NAME, "version": "rayscribe", "arch": "whisper"}
MODEL_UUID = "00000000-0000-0000-0000-00000000da7a"  # fixed: one model behind the adapter
CHANNELS = [0, 1]  # Deepgram's [channel index, channel count] for a mono stream


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True)


class Word(_Message):
    word: str  # lower case, no punctuation (Deepgram's convention)
    start: float
    end: float
    confidence: float
    punctuated_word: str


class Alternative(_Message):
    transcript: str
    confidence: float
    words: list[Word]


class Channel(_Message):
    alternatives: list[Alternative]


class ModelInfo(_Message):
    name: str
    version: str
    arch: str


class ResultsMetadata(_Message):
    request_id: str
    model_info: ModelInfo
    model_uuid: str = MODEL_UUID


class Results(_Message):
    type: Literal["Results"] = "Results"
    channel_index: list[int] = CHANNELS
    start: float  # stream seconds this result covers: start .. start + duration
    duration: float
    is_final: bool
    speech_final: bool
    from_finalize: bool = False
    channel: Channel
    metadata: ResultsMetadata


class Metadata(_Message):
    type: Literal["Metadata"] = "Metadata"
    transaction_key: str = "deprecated"
    request_id: str
    sha256: str = ""
    created: str
    duration: float
    channels: int = 1
    models: list[str] = [MODEL_UUID]
    model_info: dict[str, ModelInfo] = {MODEL_UUID: ModelInfo(**MODEL_INFO)}


class UtteranceEnd(_Message):
    type: Literal["UtteranceEnd"] = "UtteranceEnd"
    channel: list[int] = CHANNELS
    last_word_end: float


class SpeechStarted(_Message):
    type: Literal["SpeechStarted"] = "SpeechStarted"
    channel: list[int] = CHANNELS
    timestamp: float


class Error(_Message):
    type: Literal["Error"] = "Error"
    variant: str  # rayscribe's error code (ingest.errors)
    description: str
    message: str = ""


DeepgramMessage = Results | Metadata | UtteranceEnd | SpeechStarted | Error
