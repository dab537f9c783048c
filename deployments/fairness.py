"""Real-time streams first: an ASR replica's gate between streams at real-time pace and
streams whose audio runs ahead of it (files sent fast, resumes catching up, floods).

A stream sending faster than real time asks for 30 s windows back to back; batched with the
real-time streams' decodes, each of their batches waits for those windows (4 clients pushing
audio at full speed took a real-time stream's partial p95 from 1.0 s to 29 s).  Here a decode
for a stream more than ``ahead_s`` ahead of real time waits until no real-time decode is
queued or running, and such decodes run one at a time: a real-time decode waits for at most
one of them.  Streams ahead of real time still progress (in the real-time streams' gaps).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

AHEAD_S = 10.0  # a stream this far ahead of real time yields to real-time streams


class RealTimeFirst:
    def __init__(self, ahead_s: float = AHEAD_S) -> None:
        self.ahead_s = ahead_s
        self.realtime = 0  # real-time decodes queued or running
        self._idle = asyncio.Event()
        self._idle.set()
        self._ahead_lock = asyncio.Lock()  # one ahead-of-real-time decode at a time

    @contextlib.asynccontextmanager
    async def slot(self, ahead_s: float) -> AsyncIterator[None]:
        """Hold around one decode; ``ahead_s``: how far its stream's audio is ahead of real time."""
        if ahead_s <= self.ahead_s:
            self.realtime += 1
            self._idle.clear()
            try:
                yield
            finally:
                self.realtime -= 1
                if self.realtime == 0:
                    self._idle.set()
            return
        async with self._ahead_lock:
            while self.realtime:  # woken when the last real-time decode is done; re-checked
                await self._idle.wait()
            yield
