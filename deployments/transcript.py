"""Plain data passed between the ingress and the ASR deployment (picklable, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ingest.audio import TARGET_RATE
from ingest.errors import ModelError

MODEL_WINDOW_S = 30.0  # the most audio one decode can see (Whisper's input)
MAX_WINDOW_SAMPLES = int(MODEL_WINDOW_S * TARGET_RATE)


@dataclass(frozen=True)
class Word:
    text: str  # as decoded, usually with a leading space
    start: float  # seconds from the start of the stream
    end: float
    probability: float = 1.0


@dataclass(frozen=True)
class DecodeRequest:
    audio: np.ndarray  # float32 mono 16 kHz, at most 30 s
    offset: float = 0.0  # stream time of audio[0], added to word times
    prompt: str = ""  # committed text before this window: conditions the decoder
    forced: str = ""  # committed text inside this window: fed to the decoder, not re-decoded
    # generate at least this many tokens before end-of-text (a retry after a decode that
    # stopped right after the forced prefix although speech follows it)
    min_tokens: int = 0
    # encode the whole 30 s input even where the engine fits it to the audio (encode_pad_s):
    # a decode whose words are committed whole (endpoint, closing flush) gets the input
    # Whisper was trained on; a shortened input hallucinated tails there
    full_window: bool = False
    issued_at: float = 0.0  # wall clock when the ingress sent it (metrics: queue wait); 0 unknown
    # how far the stream's audio ran ahead of real time when this was sent (deployments/fairness.py)
    ahead_s: float = 0.0

    def check(self) -> None:
        """Raise ModelError unless the window is one the model can decode (checked per request
        before it joins a batch: one bad window must not fail the other streams' decodes)."""
        if self.audio.ndim != 1 or len(self.audio) > MAX_WINDOW_SAMPLES:
            raise ModelError(f"a decode window must be 1-D and at most 30 s, got {self.audio.shape}")


@dataclass(frozen=True)
class Hypothesis:
    words: list[Word] = field(default_factory=list)
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    looped: bool = False  # a repetition loop was detected and cut
    # how many leading words are the request's forced prefix (fed to the decoder, not decoded):
    # the words after them are the new ones, whatever times the alignment gave either
    forced_words: int = 0
    # the answering ASR replica's busy fraction over its last few seconds (None: not known):
    # what the load-adaptive cadence reads (PolicyConfig.fast_max_busy)
    engine_busy: float | None = None

    @property
    def text(self) -> str:
        return "".join(w.text for w in self.words).strip()
