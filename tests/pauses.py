"""A real recording with pauses for the voice-activity tests: three evalset clips (two
speakers, one sentence with a comma pause inside it) with 1.5 s of silence after each, and
the Whisper word timings of each clip, so a test can tell a pause from a word."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deployments.transcript import DecodeRequest, Word
from ingest.audio import TARGET_RATE, read_wav

CLIP_IDS = ("ls-test-clean-61-70968-0002", "ljspeech-LJ001-0004", "ls-test-clean-61-70968-0000")
PAUSE_S = 1.5


@dataclass(frozen=True)
class Utterance:
    start: float  # stream seconds where the clip begins
    end: float  # where it ends (its trailing silence included)
    words: list[Word]  # Whisper's words of the clip, in stream seconds


@dataclass(frozen=True)
class PausedRecording:
    samples: np.ndarray  # float32, 16 kHz
    utterances: list[Utterance]

    def mid_word(self, t: float, slack: float = 0.1) -> Word | None:
        """The word being spoken at stream second ``t`` (DTW word times are rough: ``slack``)."""
        words = [w for u in self.utterances for w in u.words]
        return next((w for w in words if w.start + slack < t < w.end - slack), None)


def paused_recording(evalset: Path) -> PausedRecording:
    from deployments.whisper.engine import WhisperEngine

    rows = {r["id"]: r for r in map(json.loads, (evalset / "manifest.jsonl").read_text().splitlines())}
    engine = WhisperEngine()
    parts, utterances, t = [], [], 0.0
    for clip_id in CLIP_IDS:
        audio = read_wav(evalset / rows[clip_id]["audio"])
        assert audio.sample_rate == TARGET_RATE
        (hyp,) = engine.transcribe([DecodeRequest(audio.samples, offset=t)])
        utterances.append(Utterance(t, t + audio.duration, hyp.words))
        parts += [audio.samples, np.zeros(int(PAUSE_S * TARGET_RATE), dtype=np.float32)]
        t += audio.duration + PAUSE_S
    return PausedRecording(np.concatenate(parts), utterances)
