"""Offline long-form windowing on a scripted decoder: every word once, in order."""

from __future__ import annotations

import numpy as np

from deployments.offline import transcribe_long
from deployments.transcript import DecodeRequest, Hypothesis, Word

SR = 16000


def word_clock(requests: list[DecodeRequest]) -> list[Hypothesis]:
    """A fake model that hears word k spoken from k*0.6 s to k*0.6+0.5 s."""
    out = []
    for r in requests:
        end = r.offset + len(r.audio) / SR
        first = int(np.ceil(r.offset / 0.6 - 1e-9))
        words = [
            Word(f" w{k}", k * 0.6, k * 0.6 + 0.5)
            for k in range(first, int(end / 0.6) + 1)
            if k * 0.6 + 0.5 <= end
        ]
        out.append(Hypothesis(words))
    return out


def test_long_audio_is_transcribed_once_in_order() -> None:
    audio = np.zeros(int(65 * SR), dtype=np.float32)
    words = transcribe_long(word_clock, audio)
    assert [w.text for w in words] == [f" w{k}" for k in range(len(words))]
    assert words[-1].end > 64.0


def test_offline_windows_get_the_whole_encoder_input() -> None:
    """Offline is the accuracy baseline: every window is encoded at Whisper's 30 s, also on an
    engine that fits streaming windows to their audio (encode_pad_s)."""
    seen: list[DecodeRequest] = []

    def record(requests: list[DecodeRequest]) -> list[Hypothesis]:
        seen.extend(requests)
        return word_clock(requests)

    transcribe_long(record, np.zeros(int(45 * SR), dtype=np.float32))
    assert len(seen) >= 3 and all(r.full_window for r in seen)
