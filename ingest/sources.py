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


def load_file(path: str | Path, keep_channels: bool = False) -> WavAudio:
    """An audio file as float32 mono (or, ``keep_channels``, (frames, channels)): decoded by
    PyAV; without PyAV, mono 16-bit WAV only."""
    try:
        import av  # noqa: F401
    except ImportError:
        if Path(path).suffix.lower() == ".wav" and not keep_channels:
            return read_wav(path)
        raise UnsupportedAudio(f"{path}: this needs PyAV: pip install 'rayscribe[cli]'") from None
    return decode_file(path, keep_channels=keep_channels)


def decode_file(path: str | Path, rate: int = TARGET_RATE, keep_channels: bool = False) -> WavAudio:
    """Any audio file FFmpeg decodes -> float32 at ``rate`` (resampled): mono (mixed down),
    or with ``keep_channels`` one column per channel, (frames, channels)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise UnsupportedAudio(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            channels = stream.channels if keep_channels else 1
            layout = stream.layout.name if keep_channels else "mono"
            # "flt" is packed: a frame's samples come interleaved, one row of frames x channels
            resampler = av.AudioResampler(format="flt", layout=layout, rate=rate)
            parts: list[np.ndarray] = []
            for frame in container.decode(stream):
                parts += [f.to_ndarray().reshape(-1, channels) for f in resampler.resample(frame)]
            parts += [f.to_ndarray().reshape(-1, channels) for f in resampler.resample(None)]
    except av.FFmpegError as e:
        raise UnsupportedAudio(f"{path}: cannot decode ({e})") from e
    samples = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, channels), np.float32)
    return WavAudio(samples if keep_channels else samples.reshape(-1), rate)


async def read_pcm(
    stream: BinaryIO, encoding: str, channels: int = 1, chunk_bytes: int = 6400, mix: bool = True
) -> AsyncIterator[np.ndarray]:
    """Raw interleaved PCM from a pipe (``arecord``, ``ffmpeg -f s16le -``) as float32 chunks,
    as soon as the pipe delivers them (a blocking read runs off the event loop): mono (mixed
    down), or without ``mix`` (frames, channels)."""
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
            samples = decode_pcm(pending[:whole], encoding)
            yield _mono(samples, channels) if mix else samples.reshape(-1, channels)
            pending = pending[whole:]
    if pending:
        raise UnsupportedAudio(f"the input ended inside a sample frame ({len(pending)} bytes left)")


def _mono(samples: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return samples
    mixed: np.ndarray = samples.reshape(-1, channels).mean(axis=1).astype(np.float32)
    return mixed
