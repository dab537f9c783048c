"""The PyTorch Whisper port against the reference CTranslate2 decode (faster-whisper)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from deployments.transcript import DecodeRequest
from deployments.whisper.ct2 import count_layers, read_ct2_variables
from deployments.whisper.engine import WhisperEngine, default_model_dir
from deployments.whisper.features import log_mel
from ingest.audio import read_wav

pytestmark = pytest.mark.model
N_REFERENCE_CLIPS = 12


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine()


@pytest.fixture(scope="module")
def faster_whisper():  # type: ignore[no-untyped-def]
    os.environ["HF_HUB_OFFLINE"] = "1"
    fw = pytest.importorskip("faster_whisper")
    return fw.WhisperModel(str(default_model_dir()), device="cpu", compute_type="float32", cpu_threads=2)


def clips(evalset: Path, n: int) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (evalset / "manifest.jsonl").read_text().splitlines()]
    by_source: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        by_source.setdefault(str(r["source"]).split()[0], []).append(r)
    picked = [r for group in by_source.values() for r in group[:3]]  # every source, few each
    return picked[:n]


def reference_segments(fw, audio: np.ndarray, word_timestamps: bool = False) -> list:  # type: ignore[no-untyped-def, type-arg]
    """The CTranslate2 reference decode with our engine's settings: greedy, temperature 0,
    no timestamp tokens, no conditioning on earlier windows, no VAD."""
    segments, _ = fw.transcribe(
        audio,
        beam_size=1,
        temperature=[0.0],
        without_timestamps=True,
        word_timestamps=word_timestamps,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    return list(segments)


def test_ct2_file_has_the_expected_whisper_tiny_layout() -> None:
    v = read_ct2_variables(default_model_dir() / "model.bin")
    assert count_layers(v, "encoder/") == 4 and count_layers(v, "decoder/") == 4
    assert v["decoder/embeddings/weight"].shape == (51864, 384)
    assert v["decoder/projection/weight"] is v["decoder/embeddings/weight"]  # tied alias


def test_log_mel_matches_faster_whisper(faster_whisper) -> None:  # type: ignore[no-untyped-def]
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = read_wav(Path(__file__).parents[2] / "ingest" / "samples" / "jfk.wav").samples
    ref = FeatureExtractor()(audio)
    mine = log_mel(torch.from_numpy(audio)).numpy()
    assert mine.shape == ref.shape
    assert np.abs(mine - ref).max() < 1e-3


def test_transcripts_match_ctranslate2_reference(engine, faster_whisper, evalset) -> None:  # type: ignore[no-untyped-def]
    chosen = clips(evalset, N_REFERENCE_CLIPS)
    assert len(chosen) >= 10
    mismatches = []
    for row in chosen:
        audio = read_wav(evalset / str(row["audio"])).samples
        mine = engine.transcribe([DecodeRequest(audio)])[0].text
        ref = " ".join(s.text.strip() for s in reference_segments(faster_whisper, audio))
        if mine != ref:
            mismatches.append((row["id"], mine, ref))
    assert mismatches == []


def test_word_timestamps_agree_with_reference(engine, faster_whisper) -> None:  # type: ignore[no-untyped-def]
    audio = read_wav(Path(__file__).parents[2] / "ingest" / "samples" / "jfk.wav").samples
    hyp = engine.transcribe([DecodeRequest(audio, offset=100.0)])[0]
    segments = reference_segments(faster_whisper, audio, word_timestamps=True)
    ref = [w for s in segments for w in (s.words or [])]
    assert [w.text.strip() for w in hyp.words] == [w.word.strip() for w in ref]
    starts = np.array([w.start - 100.0 for w in hyp.words])
    assert np.all(np.diff(starts) >= 0)
    assert all(w.end >= w.start for w in hyp.words)
    assert hyp.words[-1].end - 100.0 <= len(audio) / 16000 + 0.05
    # same DTW over the same alignment heads: every word starts on the same 20 ms frame
    # (faster-whisper only post-clips some ends, e.g. the last word's)
    assert float(np.abs(starts - np.array([w.start for w in ref])).max()) < 0.021


def test_batched_decode_equals_one_by_one(engine, evalset) -> None:  # type: ignore[no-untyped-def]
    rows = clips(evalset, 3)
    reqs = [
        DecodeRequest(read_wav(evalset / str(r["audio"])).samples, prompt=p)
        for r, p in zip(rows, ["", "Earlier, we talked about books.", "A"], strict=True)
    ]
    batched = engine.transcribe(reqs)
    single = [engine.transcribe([r])[0] for r in reqs]
    assert [h.text for h in batched] == [h.text for h in single]
    for b, s in zip(batched, single, strict=True):
        np.testing.assert_allclose([w.start for w in b.words], [w.start for w in s.words], atol=0.021)


def test_the_window_limit_checked_per_request_is_the_models_input(engine) -> None:  # type: ignore[no-untyped-def]
    from deployments.transcript import MAX_WINDOW_SAMPLES
    from deployments.whisper.features import CHUNK_SAMPLES
    from ingest.errors import ModelError

    assert MAX_WINDOW_SAMPLES == CHUNK_SAMPLES
    with pytest.raises(ModelError, match="at most 30 s"):
        engine.transcribe([DecodeRequest(np.zeros(CHUNK_SAMPLES + 1, dtype=np.float32))])


def test_silence_gives_no_words(engine) -> None:  # type: ignore[no-untyped-def]
    hyp = engine.transcribe([DecodeRequest(np.zeros(16000 * 3, dtype=np.float32))])[0]
    assert hyp.words == []


def test_repetition_loop_is_cut(engine) -> None:  # type: ignore[no-untyped-def]
    tok = engine.tokenizer
    loop = tok.encode(" I said") + tok.encode(" the end") * 12
    cut = engine.decoder._loop_cut(loop)
    assert cut is not None
    assert tok.decode(loop[:cut]) == " I said the end"
    assert engine.decoder._loop_cut(tok.encode(" a perfectly ordinary sentence")) is None


def test_forced_prefix_is_kept_and_the_rest_decoded(engine) -> None:  # type: ignore[no-untyped-def]
    """Committed words inside a window are fed, not re-decoded: the transcript starts with
    them verbatim and goes on to the end of the audio."""
    from ingest.wer import normalize

    audio = read_wav(Path(__file__).parents[2] / "ingest" / "samples" / "jfk.wav").samples
    forced = " And so my fellow Americans, ask not"
    free = engine.transcribe([DecodeRequest(audio)])[0]
    hyp = engine.transcribe([DecodeRequest(audio, forced=forced)])[0]
    assert hyp.text.startswith(forced.strip())
    assert normalize(hyp.text) == normalize(free.text)
    starts = [w.start for w in hyp.words]
    assert starts == sorted(starts) and hyp.words[-1].end > 10.0
    # the hypothesis says which words were fed: the policy takes the rest as new
    assert hyp.forced_words == len(forced.split()) and free.forced_words == 0
    assert "".join(w.text for w in hyp.words[: hyp.forced_words]) == forced
    assert hyp.words[hyp.forced_words].text.strip().startswith("what")
