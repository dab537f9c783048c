"""Audio sources for the CLI and the live API: files decoded by PyAV (FFmpeg's decoders in a
manylinux wheel: mp3, m4a/aac, ogg/opus, flac, wav, ...) and raw PCM from a pipe (stdin)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ingest.audio import TARGET_RATE, WavAudio, decode_pcm, read_wav
from ingest.errors import UnsupportedAudio

ENCODINGS = {"s16le": "pcm_s16le", "pcm_s16le": "pcm_s16le", "f32le": "f32le"}
_WIDTH = {"pcm_s16le": 2, "f32le": 4}


def load_file(path: str | Path) -> WavAudio:
    """An audio file as float32 mono: decoded by PyAV; without PyAV, 16-bit WAV only."""
    try:
        import av  # noqa: F401
    except ImportError:
        if Path(path).suffix.lower() == ".wav":
            return read_wav(path)
        raise UnsupportedAudio(f"{path}: this format needs PyAV: pip install 'rayscribe[cli]'") from None
    return decode_file(path)


def decode_file(path: str | Path, rate: int = TARGET_RATE) -> WavAudio:
    """Any audio file FFmpeg decodes -> float32 mono at ``rate`` (mixed down, resampled)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    parts: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise UnsupportedAudio(f"{path}: no audio stream")
            for frame in container.decode(container.streams.audio[0]):
                parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.FFmpegError as e:
        raise UnsupportedAudio(f"{path}: cannot decode ({e})") from e
    samples = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    return WavAudio(samples, rate)


async def read_pcm(
    stream: BinaryIO, encoding: str, channels: int = 1, chunk_bytes: int = 6400
) -> AsyncIterator[np.ndarray]:
    """Raw interleaved PCM from a pipe (``arecord``, ``ffmpeg -f s16le -``) as float32 mono
    chunks, as soon as the pipe delivers them (a blocking read runs off the event loop)."""
    width = _WIDTH[encoding] * channels
    pending = b""
    read = getattr(stream, "read1", stream.read)  # read1: what the pipe has now, not a full chunk
    while True:
        data = await asyncio.to_thread(read, chunk_bytes)
        if not data:
            break
        pending += data
        whole = len(pending) - len(pending) % width  # a read may split a sample frame
        if whole:
            yield _mono(decode_pcm(pending[:whole], encoding), channels)
            pending = pending[whole:]
    if pending:
        raise UnsupportedAudio(f"the input ended inside a sample frame ({len(pending)} bytes left)")


def _mono(samples: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return samples
    mixed: np.ndarray = samples.reshape(-1, channels).mean(axis=1).astype(np.float32)
    return mixed
