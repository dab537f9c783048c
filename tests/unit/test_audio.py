from __future__ import annotations

import numpy as np
import pytest

from ingest.audio import StreamResampler, decode_pcm, encode_pcm, read_wav
from ingest.errors import UnsupportedAudio


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_resampler_is_accurate_and_chunking_invariant(rate: int) -> None:
    t = np.arange(rate * 2) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    whole = StreamResampler(rate)
    one = np.concatenate([whole.push(x), whole.flush()])
    rng = np.random.default_rng(rate)
    pieces, r, i = [], StreamResampler(rate), 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        pieces.append(r.push(x[i : i + n]))
        i += n
    pieces.append(r.flush())
    assert len(one) == 32000
    np.testing.assert_array_equal(one, np.concatenate(pieces))
    ideal = 0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    assert np.abs(one[200:-200] - ideal[200:-200]).max() < 1e-3


def test_resampler_removes_content_above_8k_when_downsampling() -> None:
    rate = 48000
    t = np.arange(rate) / rate
    x = np.sin(2 * np.pi * 12000 * t).astype(np.float32)  # would alias to 4 kHz
    r = StreamResampler(rate)
    y = np.concatenate([r.push(x), r.flush()])
    assert np.sqrt(np.mean(y[500:-500] ** 2)) < 0.01


def test_pcm_round_trip() -> None:
    x = np.linspace(-0.9, 0.9, 100).astype(np.float32)
    np.testing.assert_allclose(decode_pcm(encode_pcm(x, "pcm_s16le"), "pcm_s16le"), x, atol=1e-4)
    np.testing.assert_array_equal(decode_pcm(encode_pcm(x, "f32le"), "f32le"), x)


def test_far_out_of_range_floats_are_rejected() -> None:
    with pytest.raises(UnsupportedAudio):
        decode_pcm(np.array([1000.0], dtype="<f4").tobytes(), "f32le")


def test_slightly_loud_floats_are_clipped() -> None:
    assert decode_pcm(np.array([1.5, -2.0], dtype="<f4").tobytes(), "f32le").tolist() == [1.0, -1.0]


def test_read_wav(tmp_path: object) -> None:
    from ingest.cli import SAMPLE_WAV

    wav = read_wav(SAMPLE_WAV)
    assert wav.sample_rate == 16000 and 10 < wav.duration < 12


def test_read_wav_rejects_non_wav(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "x.wav"
    bad.write_bytes(b"not a wav file at all")
    with pytest.raises(UnsupportedAudio):
        read_wav(bad)
