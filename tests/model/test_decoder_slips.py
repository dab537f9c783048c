"""Decoder slips the streaming policy catches, on the real recording that showed them: a
window that starts at a committed sentence end, prompted with that sentence, makes greedy
decoding skip the next sentence; the policy's checked decode redoes it without the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deployments.config import EngineConfig
from deployments.simulate import decode_checked
from deployments.streaming import LocalAgreement, PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis, Word
from deployments.whisper.engine import WhisperEngine
from ingest.audio import TARGET_RATE, read_wav

pytestmark = pytest.mark.model
CLIPS = ("ls-dev-clean-2412-153948-0000", "ljspeech-LJ001-0001")  # a pair in the failover tier
CUT = 4.58  # where "...nothing of my antecedents" ends in that stream


@pytest.fixture(scope="module")
def pair(evalset: Path) -> np.ndarray:
    rows = {r["id"]: r for r in map(json.loads, (evalset / "manifest.jsonl").read_text().splitlines())}
    first, second = (read_wav(evalset / rows[c]["audio"]).samples for c in CLIPS)
    return np.concatenate([first, np.zeros(TARGET_RATE // 2, np.float32), second])


def test_a_sentence_skipped_after_a_prompt_is_decoded_again(pair: np.ndarray) -> None:
    engine = WhisperEngine(EngineConfig(num_threads=2))
    said = [Word(" my", 3.16, 3.4), Word(" antecedents.", 3.4, CUT)]
    la = LocalAgreement(PolicyConfig())
    la.restore(CUT, said)
    la.add_audio(pair[int(CUT * TARGET_RATE) : 16 * TARGET_RATE])
    calls: list[DecodeRequest] = []

    def decode(request: DecodeRequest) -> Hypothesis:
        calls.append(request)
        return engine.transcribe([request])[0]

    hyp = decode_checked(la, decode, final=False)
    first = decode(calls[0])  # what the prompted decode alone said
    assert "circumstances" not in first.text, first.text  # the slip: "The narrative would be..."
    assert len(calls) == 3 and calls[1].prompt == ""  # checked once without the prompt
    assert "circumstances which led me to leave my native country" in hyp.text, hyp.text
