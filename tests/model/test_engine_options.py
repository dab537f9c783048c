"""Engine options of issue 6: the int8 output projection keeps transcripts; the fitted
encoder window is what it says; the bfloat16 encoder runs only its linear layers in
bfloat16."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deployments.config import EngineConfig
from deployments.transcript import DecodeRequest
from deployments.whisper.engine import WhisperEngine, native_bf16
from deployments.whisper.features import N_FRAMES, log_mel
from deployments.whisper.graphs import StaticSteps
from ingest.audio import read_wav
from ingest.wer import normalize, wer

pytestmark = pytest.mark.model


def test_int8_projection_keeps_the_transcripts(evalset: Path) -> None:
    rows = [json.loads(line) for line in (evalset / "manifest.jsonl").read_text().splitlines()][::19]
    plain = WhisperEngine(EngineConfig(num_threads=2))
    int8 = WhisperEngine(EngineConfig(num_threads=2, quantize="int8"))
    assert int8.quantized and int8.model.decoder.projection is not None
    for row in rows:
        request = DecodeRequest(read_wav(evalset / row["audio"]).samples)
        # the same words (the case of a first letter may flip: "But" / "but" on one clip)
        assert normalize(int8.transcribe([request])[0].text) == normalize(plain.transcribe([request])[0].text)


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    assert native_bf16("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert native_bf16("flags\t\t: fpu avx512f amx_bf16 amx_tile\n")  # Sapphire Rapids
    assert not native_bf16("flags\t\t: fpu avx2 avx512f avx512bw\n")  # no native bfloat16
    assert not native_bf16("processor\t: 0\n")


def test_bf16_encoder(evalset: Path) -> None:
    """With ``cpu_bf16_encoder`` the encoder's linear layers run in bfloat16 while its stem
    and the residual stream stay float32; its output is float32, near the float32 encoder's,
    and a sample of the evalset is transcribed within a point of float32's WER."""
    plain = WhisperEngine(EngineConfig(num_threads=2, quantize="int8", encode_pad_s=2.0))
    bf16 = WhisperEngine(
        EngineConfig(num_threads=2, quantize="int8", encode_pad_s=2.0, cpu_bf16_encoder="on")
    )
    auto = WhisperEngine(EngineConfig(num_threads=2, cpu_bf16_encoder="auto"))
    assert bf16.encoder_bf16 and not plain.encoder_bf16 and auto.encoder_bf16 == native_bf16()
    rows = [json.loads(line) for line in (evalset / "manifest.jsonl").read_text().splitlines()][::7]
    audio = [read_wav(evalset / row["audio"]).samples for row in rows]
    dtypes: dict[str, torch.dtype] = {}
    encoder = bf16.model.encoder
    parts = (("stem", encoder.conv2), ("linear", encoder.blocks[0].mlp.fc1), ("residual", encoder.blocks[0]))
    for name, module in parts:
        module.register_forward_hook(lambda _m, _i, out, name=name: dtypes.__setitem__(name, out.dtype))
    mel, frames = bf16.features(audio[:1])
    ours, _ = bf16.encode(mel, frames, [False])
    theirs, _ = plain.encode(mel, frames, [False])
    assert dtypes == {"stem": torch.float32, "linear": torch.bfloat16, "residual": torch.float32}
    assert ours.dtype == torch.float32
    error = float((ours - theirs).abs().max() / theirs.abs().max())
    assert 0 < error < 0.03  # bfloat16 keeps 8 bits of mantissa: ~1 % here
    refs = [str(row["text"]) for row in rows]
    plain_wer = wer(refs, [h.text for h in plain.transcribe([DecodeRequest(a) for a in audio])])
    bf16_wer = wer(refs, [h.text for h in bf16.transcribe([DecodeRequest(a) for a in audio])])
    assert bf16_wer <= plain_wer + 0.01, (bf16_wer, plain_wer)


def test_bf16_encoder_under_load_follows_the_replicas_busy_fraction(evalset: Path) -> None:
    """``under_load`` starts in float32, runs the bfloat16 encoder (the ``on`` engine's output)
    once the replica's busy fraction reaches ``bf16_busy_on``, keeps it while the load sits
    between the two bounds and goes back to float32 (the ``off`` engine's output) below
    ``bf16_busy_off``; where the CPU has no native bfloat16 it never switches."""
    base = {"num_threads": 2, "quantize": "int8", "encode_pad_s": 2.0}
    adaptive = WhisperEngine(EngineConfig(**base, cpu_bf16_encoder="under_load"))
    plain = WhisperEngine(EngineConfig(**base))
    bf16 = WhisperEngine(EngineConfig(**base, cpu_bf16_encoder="on"))
    row = json.loads((evalset / "manifest.jsonl").read_text().splitlines()[0])
    mel, frames = plain.features([read_wav(evalset / row["audio"]).samples])
    reference = {
        "float32": plain.encode(mel, frames, [False])[0],
        "bfloat16": bf16.encode(mel, frames, [False])[0],
    }
    assert not torch.equal(reference["float32"], reference["bfloat16"])
    native = native_bf16()
    seen = []
    for busy in (0.3, 0.79, 0.85, 0.6, 0.5, 0.49, 0.95):
        adaptive.observe_load(busy)
        seen.append(adaptive.encoder_precision)
        assert torch.equal(adaptive.encode(mel, frames, [False])[0], reference[seen[-1]])
    on, off = "bfloat16" if native else "float32", "float32"
    assert seen == [off, off, on, on, on, off, on]
    plain.observe_load(1.0)  # "off" and "on" do not follow the load
    bf16.observe_load(0.0)
    assert (plain.encoder_precision, bf16.encoder_precision) == ("float32", "bfloat16")


def test_fitted_encoder_window() -> None:
    full = WhisperEngine(EngineConfig(num_threads=2))
    fitted = WhisperEngine(EngineConfig(num_threads=2, encode_pad_s=5.0, encode_bucket_s=5.0))
    assert full.encoder_frames([300]) == N_FRAMES  # as trained: always 30 s
    assert fitted.encoder_frames([300]) == 1000  # 3 s + 5 s, up to a 5 s bucket
    assert fitted.encoder_frames([300, 1201]) == 2000  # the batch's longest row decides
    assert fitted.encoder_frames([2900]) == N_FRAMES  # never past 30 s
    assert fitted.encoder_frames([300], full=True) == N_FRAMES  # a committing decode: 30 s


def test_static_cache_decodes_what_the_growing_cache_does(evalset: Path) -> None:
    """The CUDA-graph token loop's static cache, run eagerly on CPU: a batch of windows of
    different lengths with prompts, forced words and a fitted (masked) encoder input decodes
    the same tokens, word timings and probabilities as the plain loop."""
    engine = WhisperEngine(EngineConfig(num_threads=2, encode_pad_s=2.0))
    rows = [json.loads(line) for line in (evalset / "manifest.jsonl").read_text().splitlines()][::23]
    requests = []
    for i, row in enumerate(rows):
        audio = read_wav(evalset / row["audio"]).samples
        words = str(row["text_norm"]).split()
        # a streaming decode: the committed words before the window as the prompt, the first
        # ones still inside it forced; one row plain
        prompt, forced = (" ".join(words[:2]), " ".join(words[:2])) if i % 2 else ("", "")
        requests.append(DecodeRequest(audio, prompt=prompt, forced=forced, offset=float(i)))
    plain = engine.transcribe(requests)
    steps = StaticSteps(engine.model, engine.decoder.alignment_heads, max_batch=8, graphs=False)
    engine.decoder.steps = steps
    static = engine.transcribe(requests)
    assert steps.size == 8  # the batch was padded up to its bucket
    for a, b in zip(plain, static, strict=True):
        assert a.text == b.text and a.text
        assert a.avg_logprob == pytest.approx(b.avg_logprob, abs=1e-4)
        for wa, wb in zip(a.words, b.words, strict=True):
            assert (wa.start, wa.end) == pytest.approx((wb.start, wb.end), abs=0.021)
            assert wa.probability == pytest.approx(wb.probability, abs=1e-3)


def test_cpu_rows_are_encoded_at_their_own_width(evalset: Path) -> None:
    """On CPU each row of a fitted batch is encoded at its own width (padding every row to
    the longest cost up to half the encoder's time): its encoder output is the one it gets
    alone, the padding is masked, and it decodes the words it decodes alone."""
    engine = WhisperEngine(EngineConfig(num_threads=2, encode_pad_s=2.0))
    rows = [json.loads(line) for line in (evalset / "manifest.jsonl").read_text().splitlines()][::29]
    requests = [DecodeRequest(read_wav(evalset / row["audio"]).samples) for row in rows]
    requests.append(DecodeRequest(requests[0].audio, full_window=True))  # a flush: all 30 s
    mel, frames = engine.features([r.audio for r in requests])
    full = [r.full_window for r in requests]
    audio, valid = engine.encode(mel, frames, full)
    assert valid is not None and audio.shape[1] == N_FRAMES // 2
    widths = [engine.encoder_frames([f], full=w) for f, w in zip(frames, full, strict=True)]
    assert len(set(widths)) > 2 and widths[-1] == N_FRAMES
    for i, (r, f, w) in enumerate(zip(requests, frames, full, strict=True)):
        alone, mask = engine.encode(log_mel(torch.from_numpy(r.audio))[None], [f], [w])
        assert mask is None and int(valid[i].sum()) == alone.shape[1] == widths[i] // 2
        assert torch.allclose(audio[i, : alone.shape[1]], alone[0], atol=1e-4)
    batch = engine.transcribe(requests)
    for request, hyp in zip(requests, batch, strict=True):
        assert hyp.text and normalize(hyp.text) == normalize(engine.transcribe([request])[0].text)
