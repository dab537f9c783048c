"""Helpers for fault tests and the failover benchmark: live streams and waits on their progress."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from ingest import messages as m
from ingest.audio import read_wav
from ingest.client import ClientEvent, StreamOptions, StreamResult, stream_audio


async def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait for a condition that the streams' own progress makes true."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class LiveStreams:
    """N SDK streams running at once; counts finals per stream as they arrive."""

    def __init__(self, url: str, audio: list[np.ndarray], options: StreamOptions) -> None:
        self.url, self.audio, self.options = url, audio, options
        self.finals = [0] * len(audio)
        self.events: list[list[ClientEvent | m.AnyServerMessage]] = [[] for _ in audio]

    def _on(self, i: int) -> Callable[[m.AnyServerMessage | ClientEvent], None]:
        def on_message(message: m.AnyServerMessage | ClientEvent) -> None:
            self.events[i].append(message)
            if isinstance(message, m.Final):
                self.finals[i] += 1

        return on_message

    async def run(self, fault: Callable[[LiveStreams], Awaitable[None]] | None = None) -> list[StreamResult]:
        tasks = [
            asyncio.create_task(stream_audio(self.url, a, 16000, self.options, self._on(i)))
            for i, a in enumerate(self.audio)
        ]
        if fault is not None:
            await fault(self)
        return list(await asyncio.gather(*tasks))

    def all_have(self, n: int) -> bool:
        return all(f >= n for f in self.finals)

    def session_id(self, i: int) -> str:
        return next(e.session_id for e in self.events[i] if isinstance(e, m.Ready))


def load_audio(paths: list[Path]) -> list[np.ndarray]:
    out = []
    for p in paths:
        wav = read_wav(p)
        assert wav.sample_rate == 16000, p
        out.append(wav.samples)
    return out
