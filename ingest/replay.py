"""The client's replay buffer: captured audio the server has not yet acknowledged (sans-I/O).

Positions are sample indices of the stream at the client's own rate.  Audio before the last
``ack`` is dropped; past ``max_s`` the oldest audio is dropped too, and a resume that needs it
learns so from :meth:`ReplayBuffer.read` (a gap it must report, never hide).
"""

from __future__ import annotations

from collections import deque

import numpy as np


class ReplayBuffer:
    def __init__(self, rate: int, max_s: float) -> None:
        self.rate = rate
        self.max_samples = max(1, int(max_s * rate))
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (start index, samples)
        self.base = 0  # index of the oldest sample kept
        self.end = 0  # index one past the newest sample captured

    def append(self, samples: np.ndarray, keep_from: int | None = None) -> None:
        """Add captured audio; past ``max_s`` drop the oldest, but never from ``keep_from`` on
        (audio a live connection still has to send)."""
        if samples.size == 0:
            return
        self._chunks.append((self.end, samples.astype(np.float32, copy=False)))
        self.end += len(samples)
        overflow = self.end - self.max_samples
        self._drop_before(overflow if keep_from is None else min(overflow, keep_from))

    def ack(self, index: int) -> None:
        """The server has everything before ``index`` durably: it is never needed again."""
        self._drop_before(min(index, self.end))

    def _drop_before(self, index: int) -> None:
        while self._chunks and index > self.base:
            start, chunk = self._chunks[0]
            if start + len(chunk) <= index:
                self._chunks.popleft()
                self.base = start + len(chunk)
            else:
                self._chunks[0] = (index, chunk[index - start :])
                self.base = index
        if not self._chunks:
            self.base = max(self.base, min(index, self.end))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)``; ``start`` must be >= :attr:`base` (else it was dropped)."""
        if start < self.base:
            raise ValueError(f"samples before {self.base} were dropped (asked from {start})")
        parts = [
            chunk[max(0, start - s) : max(0, stop - s)]
            for s, chunk in self._chunks
            if s < stop and s + len(chunk) > start
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
