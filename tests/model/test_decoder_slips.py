"""Decoder slips the streaming policy catches, on the real recording that showed them: a
window that starts at a committed sentence end, prompted with that sentence, makes greedy
decoding skip the next sentence; the policy's checked decode redoes it without the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deployments.app import served_args
from deployments.config import EngineConfig
from deployments.simulate import decode_checked, simulate_stream
from deployments.streaming import LocalAgreement, PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis, Word
from deployments.whisper.engine import WhisperEngine
from ingest.audio import TARGET_RATE, read_wav
from ingest.wer import normalize

pytestmark = pytest.mark.model
CLIPS = ("ls-dev-clean-2412-153948-0000", "ljspeech-LJ001-0001")  # a pair in the failover tier
_APP = served_args()  # what ray_config.yaml serves on CPU
SERVED = _APP.engine.model_copy(update={"num_threads": 2})
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


def test_the_last_word_is_not_stretched_over_speech_the_decoder_left_out(pair: np.ndarray) -> None:
    """A window that goes on after the decoder stopped ("...painful to myself." then
    "Printing, in the only sense..." from 12.3 s): DTW gave "myself." 10.6-13.8 s.  The
    decoder stops there with the full 30 s input, which a flush's decode gets (full_window;
    fitted to the audio + encode_pad_s it reads on)."""
    engine = WhisperEngine(SERVED)
    window = pair[: 18 * TARGET_RATE].copy()
    hyp = engine.transcribe([DecodeRequest(window, 0.0, "", "", 0, full_window=True)])[0]
    last = hyp.words[-1]
    assert "myself" in last.text and "Printing" not in hyp.text, hyp.text  # the decoder stopped there
    assert last.end < 12.3, last


def test_a_decode_outage_mid_stream_loses_no_sentence(pair: np.ndarray) -> None:
    """The failover tier's loss: decodes stop for 6 s (a replica restarts) just after the
    first recording ends; the first decode after it stops at "myself." and its stretched end
    moved the buffer cut past "Printing, in the only sense"."""
    engine = WhisperEngine(SERVED)
    result = simulate_stream(engine.transcribe, pair, _APP.ingress.policy, outage=(12.0, 18.0))
    said = " ".join(normalize(result.text))
    assert "in the only sense with which" in said and "if not from all the arts" in said, said
