"""Offline (non-streaming) long-form transcription: sequential ``WINDOW_S`` windows.

The accuracy baseline for streaming: each window is decoded once, prompted with the text
before it; the next window starts where the last confidently finished word ends.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deployments.transcript import DecodeRequest, Hypothesis, Word
from ingest.audio import TARGET_RATE as SAMPLE_RATE

# Greedy decoding without timestamp tokens sometimes skips whole sentences of a full 30 s
# window.  Pooled WER on the long-form evalset: 33 % with 30 s windows (first 4 recordings);
# 9.8 % with 20 s and 14.6 % with 15 s windows (all 5).
WINDOW_S = 20.0


def transcribe_long(
    decode: Callable[[list[DecodeRequest]], list[Hypothesis]], audio: np.ndarray, prompt_chars: int = 200
) -> list[Word]:
    words: list[Word] = []
    pos = 0
    window = int(WINDOW_S * SAMPLE_RATE)
    while pos < len(audio):
        chunk = audio[pos : pos + window]
        offset = pos / SAMPLE_RATE
        prompt = "".join(w.text for w in words)[-prompt_chars:]
        # the whole 30 s input Whisper was trained on, whatever the engine's encode_pad_s
        hyp = decode([DecodeRequest(chunk, offset, prompt, full_window=True)])[0]
        last = pos + len(chunk) >= len(audio)
        keep = hyp.words if last else [w for w in hyp.words if w.end <= offset + WINDOW_S - 1.0]
        if not last and len(keep) > 1:
            keep = keep[:-1]  # the final word of a window is often cut mid-way
        words.extend(keep)
        if last:
            break
        advance = int((keep[-1].end - offset) * SAMPLE_RATE) if keep else window - SAMPLE_RATE
        pos += max(advance, SAMPLE_RATE)
    return words
