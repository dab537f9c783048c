"""PCM decoding, validation, streaming resampling to 16 kHz, and WAV reading."""

from __future__ import annotations

import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.errors import UnsupportedAudio

TARGET_RATE = 16000
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "f32le": 4}


def decode_pcm(data: bytes, encoding: str) -> np.ndarray:
    """Little-endian PCM bytes -> float32 samples in [-1, 1]; rejects misaligned or
    non-finite input."""
    width = BYTES_PER_SAMPLE.get(encoding)
    if width is None:
        raise UnsupportedAudio(f"unknown encoding {encoding!r}; use pcm_s16le or f32le")
    if len(data) % width:
        raise UnsupportedAudio(f"{encoding} frame of {len(data)} bytes is not a whole number of samples")
    if encoding == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        raise UnsupportedAudio("f32le audio contains NaN or infinite samples")
    if samples.size and float(np.abs(samples).max()) > 1.0 + 1e-3:
        # a loud clip is still speech: clip, but a value far out of range is a wrong encoding
        if float(np.abs(samples).max()) > 64.0:
            raise UnsupportedAudio("f32le samples far outside [-1, 1]: is this really float PCM?")
        np.clip(samples, -1.0, 1.0, out=samples)
    return samples


def encode_pcm(samples: np.ndarray, encoding: str) -> bytes:
    """float32 samples in [-1, 1] -> little-endian PCM bytes (the client side)."""
    if encoding == "pcm_s16le":
        return bytes((np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())
    if encoding == "f32le":
        return bytes(samples.astype("<f4").tobytes())
    raise UnsupportedAudio(f"unknown encoding {encoding!r}; use pcm_s16le or f32le")


class StreamResampler:
    """Band-limited (Kaiser-windowed sinc) resampler that gives the same output whatever
    the chunking of its input.  ``push`` returns what is ready; ``flush`` the rest."""

    ZERO_CROSSINGS = 16
    BETA = 8.6

    def __init__(self, rate_in: int, rate_out: int = TARGET_RATE) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self.step = rate_in / rate_out
        self.cutoff = 0.97 * min(1.0, rate_out / rate_in)
        self.half = math.ceil(self.ZERO_CROSSINGS / self.cutoff)
        self._buf = np.zeros(self.half, dtype=np.float64)  # left context of zeros
        self._base = -self.half  # input index of _buf[0]
        self._emitted = 0  # output samples produced
        self._consumed = 0  # input samples received

    def _kernel(self, x: np.ndarray) -> np.ndarray:
        window = np.i0(self.BETA * np.sqrt(np.clip(1.0 - (x / self.half) ** 2, 0.0, 1.0))) / np.i0(self.BETA)
        kernel: np.ndarray = self.cutoff * np.sinc(self.cutoff * x) * window
        return kernel

    def _emit(self, until: float) -> np.ndarray:
        """Outputs whose right-hand taps all lie before input index ``until``."""
        last = math.floor((until - self.half) / self.step)
        count = max(0, last - self._emitted + 1)
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        t = (self._emitted + np.arange(count)) * self.step  # input-time of each output
        left = np.floor(t).astype(np.int64) - self.half + 1
        taps = left[:, None] + np.arange(2 * self.half)[None, :]
        weights = self._kernel(t[:, None] - taps)
        idx = np.clip(taps - self._base, 0, len(self._buf) - 1)
        out = (self._buf[idx] * weights).sum(axis=1)
        self._emitted += count
        keep_from = int(math.floor(self._emitted * self.step)) - self.half + 1 - self._base
        if keep_from > 0:
            self._buf, self._base = self._buf[keep_from:], self._base + keep_from
        result: np.ndarray = out.astype(np.float32)
        return result

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.rate_in == self.rate_out:
            return samples.astype(np.float32, copy=False)
        self._buf = np.concatenate([self._buf, samples.astype(np.float64)])
        self._consumed += len(samples)
        return self._emit(self._consumed - 1)

    def flush(self) -> np.ndarray:
        if self.rate_in == self.rate_out:
            return np.zeros(0, dtype=np.float32)
        total = round(self._consumed * self.rate_out / self.rate_in)
        self._buf = np.concatenate([self._buf, np.zeros(2 * self.half + 2)])
        out = self._emit(self._consumed - 1 + 2 * self.half + 2)
        return out[: max(0, total - (self._emitted - len(out)))]


@dataclass(frozen=True)
class WavAudio:
    samples: np.ndarray  # float32 mono
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def read_wav(path: str | Path) -> WavAudio:
    """Read a 16-bit PCM WAV file, mixing multi-channel audio down to mono."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise UnsupportedAudio(f"{path}: only 16-bit PCM WAV is supported")
            channels, rate = w.getnchannels(), w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except wave.Error as e:
        raise UnsupportedAudio(f"{path}: not a PCM WAV file ({e})") from e
    samples = data.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0
    return WavAudio(samples, rate)
