"""The in-process stream simulator's commit delay (``scripts/stream_accuracy.py`` reports it)."""

from __future__ import annotations

import numpy as np

from deployments.simulate import simulate_stream
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis, Word
from ingest.audio import TARGET_RATE


def heard(requests: list[DecodeRequest]) -> list[Hypothesis]:
    """A perfect listener: a 0.5 s word for every half second its window covers whole."""
    out = []
    for r in requests:
        end = r.offset + len(r.audio) / TARGET_RATE
        first, last = int(np.ceil(r.offset * 2 - 1e-6)), int(np.floor(end * 2 + 1e-6))
        out.append(Hypothesis([Word(f" w{k}", k / 2, (k + 1) / 2) for k in range(first, last)]))
    return out


def test_commit_delay_is_the_audio_after_a_word_in_the_window_that_committed_it() -> None:
    """Decodes every second, committed on agreement: a word ending in the second before a
    decode is first heard there and committed by the next, 1 to 1.5 s of audio later."""
    audio = np.zeros(10 * TARGET_RATE, dtype=np.float32)
    result = simulate_stream(heard, audio, PolicyConfig(step_s=1.0))
    assert result.text.split() == [f"w{k}" for k in range(20)]
    assert len(result.commit_delays) == 18  # the last second's words: the close flush's
    assert all(1.0 - 1e-6 <= d <= 1.5 + 1e-6 for d in result.commit_delays), result.commit_delays
    # decodes 2 s apart: agreement waits 2 to 3.5 s; settling commits what is 1 s old at once
    agreed = simulate_stream(heard, audio, PolicyConfig(step_s=2.0))
    settled = simulate_stream(heard, audio, PolicyConfig(step_s=2.0, settle_s=1.0))
    assert (min(agreed.commit_delays), max(agreed.commit_delays)) == (2.0, 3.5)
    assert (min(settled.commit_delays), max(settled.commit_delays)) == (1.0, 2.5)
    assert settled.text == agreed.text == result.text
