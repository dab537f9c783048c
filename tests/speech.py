"""Synthetic speech (espeak-ng, installed by `make setup-speech`) for tests that need words no
recording has: spoken voice-assistant commands, each followed by a pause."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.audio import TARGET_RATE
from ingest.sources import load_file

PAUSE_S = 1.5


@dataclass(frozen=True)
class Spoken:
    samples: np.ndarray  # float32, 16 kHz
    spans: list[tuple[float, float]]  # stream seconds of each phrase's audio


def spoken(phrases: list[str], pause_s: float = PAUSE_S) -> Spoken:
    """The phrases read by espeak-ng, one after another, ``pause_s`` of silence after each."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is missing: run `make setup-speech`")
    parts: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    at = 0.0
    silence = np.zeros(int(pause_s * TARGET_RATE), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for i, phrase in enumerate(phrases):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), phrase], check=True)
            loaded = load_file(wav)
            assert loaded.sample_rate == TARGET_RATE, loaded.sample_rate
            audio = loaded.samples.astype(np.float32)
            spans.append((at, at + len(audio) / TARGET_RATE))
            parts += [audio, silence]
            at += (len(audio) + len(silence)) / TARGET_RATE
    return Spoken(np.concatenate(parts), spans)
