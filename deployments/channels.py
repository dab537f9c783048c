"""Multi-channel sessions: each channel of an interleaved stream is its own
:class:`~deployments.session.StreamSession` (policy, VAD, decodes, hooks) inside the one
session the client opened.

The parent session owns the socket and the protocol (limits, deinterleaving, resampling); it
feeds each channel's 16 kHz audio to its channel session over an in-memory transport, and
relays what a channel session sends with ``channel`` set.  A channel session's ``ready``,
``flushed`` and ``closed`` are the parent's business: it answers the client once for all of
them, and at ``close`` sends the merged, time-ordered transcript before ``closed``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import numpy as np

from ingest import messages as m
from ingest.errors import InternalError, RayscribeError, error_for_code

if TYPE_CHECKING:
    from deployments.session import StreamSession

Relay = Callable[[m.AnyServerMessage], Awaitable[None]]
Failed = Callable[[RayscribeError], Awaitable[None]]
TRANSCRIPT_PART = 200  # segments per transcript message (~40 KiB)


class ChannelTransport:
    """A channel session's side of an in-memory socket."""

    def __init__(self, channel: int, relay: Relay, failed: Failed) -> None:
        self.channel = channel
        self.relay, self.failed = relay, failed
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.flushed = asyncio.Queue[m.Flushed]()
        self.summary: m.Summary | None = None
        self.closed = asyncio.Event()

    async def receive(self) -> str | bytes | None:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        message = m.SERVER_MESSAGE.validate_json(text)
        if isinstance(message, m.Ready):
            return  # the parent said ready for all channels
        if isinstance(message, m.Flushed):
            self.flushed.put_nowait(message)
        elif isinstance(message, m.Closed):
            self.summary = message.summary
        elif isinstance(message, m.Error):
            await self.failed(error_for_code(message.code, f"channel {self.channel}: {message.message}"))
        else:
            await self.relay(message.model_copy(update={"channel": self.channel}))

    async def close(self, code: int) -> None:
        self.closed.set()  # how it ended: its closed (summary) or error message said so


class ChannelSet:
    """The channel sessions of one multi-channel session."""

    def __init__(
        self,
        config: m.Start,
        make: Callable[[int, ChannelTransport], StreamSession],
        relay: Relay,
        failed: Failed,
    ) -> None:
        self.transports = [ChannelTransport(i, relay, failed) for i in range(config.channels)]
        self.sessions = [make(i, t) for i, t in enumerate(self.transports)]
        # each channel session hears a mono start at the parent's output rate: 16 kHz floats
        start = config.model_copy(update={"channels": 1, "sample_rate": 16000, "encoding": "f32le"})
        for t in self.transports:
            t.inbox.put_nowait(start.to_json())
        self.tasks = [asyncio.create_task(s.run()) for s in self.sessions]

    def feed(self, samples: np.ndarray) -> None:
        """One block of audio, a row per channel (float32, 16 kHz)."""
        for t, row in zip(self.transports, samples, strict=True):
            t.inbox.put_nowait(np.ascontiguousarray(row, dtype="<f4").tobytes())

    async def finalize(self) -> float:
        """Flush every channel; the audio end all of them have committed."""
        for t in self.transports:
            t.inbox.put_nowait('{"type": "finalize"}')
        ends = []
        for t in self.transports:
            flushed = await self._until(t.flushed.get(), t)
            assert isinstance(flushed, m.Flushed)
            ends.append(flushed.audio_end)
        return max(ends)

    async def close(self) -> tuple[list[m.Transcript], m.Summary]:
        """Close every channel (each flushes); the merged transcript (in messages of at most
        ``TRANSCRIPT_PART`` segments: a long meeting's would pass the outbound queue's bound
        and the client's message size) and the summed summary."""
        for t in self.transports:
            t.inbox.put_nowait('{"type": "close"}')
        for t in self.transports:
            await t.closed.wait()  # a channel that failed closes too (its error went to `failed`)
        summaries = [t.summary for t in self.transports]
        if any(s is None for s in summaries):
            raise InternalError("a channel closed without a summary")
        done = [s for s in summaries if s is not None]
        summary = m.Summary(
            session_id=done[0].session_id,
            audio_seconds=max(s.audio_seconds for s in done),
            finals=sum(s.finals for s in done),
            words=sum(s.words for s in done),
            decodes=sum(s.decodes for s in done),
            decode_seconds=round(sum(s.decode_seconds for s in done), 3),
        )
        segments = [
            m.Segment(channel=i, seq=f.seq, start=f.start, end=f.end, text=f.text)
            for i, session in enumerate(self.sessions)
            for f in session.finals
        ]
        segments.sort(key=lambda s: (s.start, s.channel, s.seq))
        parts = [segments[i : i + TRANSCRIPT_PART] for i in range(0, len(segments), TRANSCRIPT_PART)] or [[]]
        messages = [m.Transcript(segments=p, last=i == len(parts) - 1) for i, p in enumerate(parts)]
        return messages, summary

    def cancel(self) -> None:
        for t in self.transports:
            t.inbox.put_nowait(None)  # a channel session whose client went away
        for task in self.tasks:
            task.cancel()

    async def _until(self, waiting: Awaitable[object], t: ChannelTransport) -> object:
        """Wait for ``waiting``, unless that channel's session ends first (it failed: the
        parent has the error through ``failed``)."""
        got = asyncio.ensure_future(waiting)
        ended = asyncio.ensure_future(t.closed.wait())
        await asyncio.wait({got, ended}, return_when=asyncio.FIRST_COMPLETED)
        if got.done():
            ended.cancel()
            return got.result()
        got.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await got
        raise InternalError(f"channel {t.channel} ended early")
