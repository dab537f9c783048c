"""Voice activity per stream: Silero VAD (the ONNX model shipped in the ``silero-vad`` wheel)
run with onnxruntime, so the ingress needs no torch.

:class:`StreamVad` turns a stream's 16 kHz audio into one speech probability per 32 ms chunk;
:class:`VoiceTracker` (pure) turns those into speech/silence with hysteresis and remembers
where the last speech ended, which is what the streaming policy gates and endpoints on.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ingest.audio import TARGET_RATE
from ingest.errors import ModelError

CHUNK = 512  # the 16 kHz model takes exactly 512 samples (32 ms) per call
CHUNK_S = CHUNK / TARGET_RATE
_CONTEXT = 64  # samples of the previous chunk the model sees before each chunk


class VadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # off by default: with endpointing on, the failover tier saw a resumed stream lose ~13
    # words at the seam (an endpoint flush committed one decode of the resent window);
    # not yet understood, so the served policy stays LocalAgreement until it is
    enabled: bool = False
    threshold: float = Field(0.5, gt=0.0, lt=1.0)  # a chunk at or above starts speech
    # below this speech ends (hysteresis: quiet word endings stay speech)
    neg_threshold: float = Field(0.3, gt=0.0, lt=1.0)


@lru_cache(maxsize=1)
def _session() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ModelError("voice activity detection needs the package: pip install onnxruntime") from e
    try:
        model = importlib.resources.files("silero_vad") / "data" / "silero_vad.onnx"
    except ModuleNotFoundError as e:
        raise ModelError("voice activity detection needs the package: pip install silero-vad") from e
    options = ort.SessionOptions()
    # one thread: many streams share the ingress; a 32 ms chunk costs ~0.2 ms
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


class StreamVad:
    """Speech probabilities for one stream's audio, chunk by chunk (keeps the model's state
    and the samples of a partial chunk between calls)."""

    def __init__(self) -> None:
        self._model = _session()
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._carry = np.zeros(0, dtype=np.float32)
        self._sr = np.array(TARGET_RATE, dtype=np.int64)

    def process(self, samples: np.ndarray) -> list[float]:
        """One probability per complete 32 ms chunk now available (in stream order)."""
        audio = np.concatenate([self._carry, samples.astype(np.float32, copy=False)])
        n = len(audio) // CHUNK
        self._carry = audio[n * CHUNK :]
        probs = []
        for i in range(n):
            chunk = audio[i * CHUNK : (i + 1) * CHUNK]
            x = np.concatenate([self._context, chunk])[None]
            out, self._state = self._model.run(None, {"input": x, "state": self._state, "sr": self._sr})
            self._context = chunk[-_CONTEXT:]
            probs.append(float(out[0, 0]))
        return probs


@dataclass
class VoiceTracker:
    """Speech/silence from chunk probabilities, in stream seconds (chunks from ``start``)."""

    config: VadConfig
    start: float = 0.0  # stream seconds where the first chunk begins
    chunks: int = 0
    speaking: bool = False
    voice_end: float = 0.0  # where the last speech chunk ended
    voice_start: float | None = None  # where the current (or last) stretch of speech began

    @property
    def end(self) -> float:
        """Stream seconds the tracker has classified up to."""
        return self.start + self.chunks * CHUNK_S

    def feed(self, probs: list[float]) -> None:
        for p in probs:
            begin = self.end
            self.chunks += 1
            if p >= self.config.threshold or (self.speaking and p >= self.config.neg_threshold):
                if not self.speaking:
                    self.voice_start = begin
                self.speaking = True
                self.voice_end = self.end
            else:
                self.speaking = False

    def silence_s(self, now: float) -> float:
        """Seconds of silence between the last speech and ``now`` (0 while speaking)."""
        return 0.0 if self.speaking else max(0.0, now - self.voice_end)


@dataclass(frozen=True)
class SpeechStart:
    """Speech began at ``timestamp``; decided at ``at`` (stream seconds, a chunk end)."""

    at: float
    timestamp: float


@dataclass(frozen=True)
class UtteranceStop:
    """Silence long enough ended the utterance that began at ``began`` and whose speech ended
    at ``voice_end``; decided at ``at``."""

    at: float
    began: float
    voice_end: float


VoiceEvent = SpeechStart | UtteranceStop

MIN_SPEECH_S = 3 * CHUNK_S  # a click or a breath shorter than this does not start an utterance
SEAM_S = 0.25  # after a resume: speech starting this close to the seam began before it


@dataclass
class VoiceEvents:
    """Utterance boundaries for the ``vad_events`` protocol messages (pure; fed the chunk
    probabilities of a :class:`StreamVad`).

    An utterance opens when speech has lasted ``MIN_SPEECH_S`` (the tracker's hysteresis keeps
    quiet word endings inside it) and closes after ``utterance_end_s`` of silence: events come
    in pairs, never mid-word.  ``resumed_at``: the stream was resumed there with a fresh model;
    speech heard right at the seam continues an utterance the client was already told about,
    so it opens the utterance without a second ``SpeechStart``."""

    tracker: VoiceTracker
    utterance_end_s: float
    resumed_at: float | None = None
    began: float | None = None  # the open utterance's start (None: between utterances)

    @classmethod
    def create(cls, config: VadConfig, utterance_end_s: float, start: float = 0.0) -> VoiceEvents:
        """Events for a stream whose audio starts at ``start`` (> 0: a resume's seam)."""
        tracker = VoiceTracker(config, start=start, voice_end=start)
        return cls(tracker, utterance_end_s, resumed_at=start if start > 0 else None)

    def feed(self, probs: list[float]) -> list[VoiceEvent]:
        events: list[VoiceEvent] = []
        for p in probs:
            self.tracker.feed([p])
            event = self._step()
            if event is not None:
                events.append(event)
        return events

    def _step(self) -> VoiceEvent | None:
        t = self.tracker
        if t.speaking and self.began is None and t.voice_start is not None:
            if self.resumed_at is not None and t.voice_start <= self.resumed_at + SEAM_S:
                self.began = t.voice_start  # the client heard this utterance start before the seam
                return None
            if t.end - t.voice_start >= MIN_SPEECH_S - 1e-9:
                self.began = t.voice_start
                return SpeechStart(at=t.end, timestamp=t.voice_start)
        elif self.began is not None and t.silence_s(t.end) >= self.utterance_end_s - 1e-9:
            began, self.began = self.began, None
            return UtteranceStop(at=t.end, began=began, voice_end=t.voice_end)
        if self.resumed_at is not None and t.end > self.resumed_at + SEAM_S:
            self.resumed_at = None  # past the seam: speech from here on is new
        return None
