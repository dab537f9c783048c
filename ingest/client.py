"""Client SDK: stream audio to a rayscribe server and collect what comes back.

    result = await stream_file("ws://127.0.0.1:8000/v1/stream", "talk.wav")
    print(result.text)

Audio is sent in ``chunk_s`` frames, at real-time pace by default (``realtime=False`` sends
as fast as the socket takes it).  Every message is timestamped on arrival so the load
tester can measure latency against the send timeline.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ingest import messages as m
from ingest.audio import encode_pcm, read_wav
from ingest.errors import ProtocolError, RayscribeError
from ingest.protocol import ClientProtocol

DEFAULT_URL = "ws://127.0.0.1:8000/v1/stream"
ServerMessage = m.Ready | m.Partial | m.Final | m.Flushed | m.Error | m.Closed
OnMessage = Callable[[ServerMessage], None]


@dataclass(frozen=True)
class StreamOptions:
    realtime: bool = True  # pace audio like a live microphone
    speed: float = 1.0  # with realtime: 2.0 plays twice as fast as real time
    chunk_s: float = 0.1  # audio per binary frame
    encoding: m.Encoding = "pcm_s16le"
    interim_results: bool = True
    open_timeout_s: float = 30.0


@dataclass
class StreamResult:
    session_id: str | None = None
    finals: list[m.Final] = field(default_factory=list)
    partials: list[tuple[float, m.Partial]] = field(default_factory=list)  # (arrival, msg)
    final_times: list[float] = field(default_factory=list)  # arrival of each final
    summary: m.Summary | None = None
    error: m.Error | None = None
    close_code: int | None = None
    sent: list[tuple[float, float]] = field(default_factory=list)  # (audio seconds sent, at)
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(f.text for f in self.finals).strip()

    def sent_time(self, audio_s: float) -> float:
        """When the audio at stream second ``audio_s`` had been sent."""
        ends = [a for a, _ in self.sent]
        i = min(bisect.bisect_left(ends, audio_s - 1e-6), len(self.sent) - 1)
        return self.sent[i][1]

    def partial_latencies(self) -> list[float]:
        """Arrival of each partial minus the send time of the newest audio it covers."""
        return [at - self.sent_time(p.audio_end) for at, p in self.partials if self.sent]

    def commit_lags(self) -> list[float]:
        """Arrival of each committed word minus the send time of the audio where it ends."""
        return [
            at - self.sent_time(w.end)
            for f, at in zip(self.finals, self.final_times, strict=True)
            for w in f.words
            if self.sent
        ]


async def stream_audio(
    url: str,
    samples: np.ndarray,
    sample_rate: int,
    options: StreamOptions | None = None,
    on_message: OnMessage | None = None,
) -> StreamResult:
    """Stream float32 mono ``samples`` and return everything the server sent back."""
    opts = options or StreamOptions()
    client = ClientProtocol(
        m.Start(sample_rate=sample_rate, encoding=opts.encoding, interim_results=opts.interim_results)
    )
    result = StreamResult()
    async with connect(url, open_timeout=opts.open_timeout_s, max_size=2**24) as ws:
        await ws.send(client.start_message())
        ready = client.receive_text(str(await ws.recv()))
        if not isinstance(ready, m.Ready):
            _record(result, ready, time.monotonic(), on_message)
            return result
        result.session_id = ready.session_id
        if on_message:
            on_message(ready)
        result.started_at = time.monotonic()
        sender = asyncio.create_task(_send_audio(ws, samples, sample_rate, opts, result))
        try:
            async for raw in ws:
                message = client.receive_text(str(raw))
                _record(result, message, time.monotonic(), on_message)
                if client.closed:
                    break
        except ConnectionClosed:
            pass
        finally:
            if not sender.done():
                sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await ws.wait_closed()
        result.close_code = ws.close_code
    result.finished_at = time.monotonic()
    return result


async def _send_audio(
    ws: ClientConnection, samples: np.ndarray, rate: int, opts: StreamOptions, result: StreamResult
) -> None:
    send = ws.send
    step = max(1, int(opts.chunk_s * rate))
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step]
        if opts.realtime:
            due = result.started_at + start / rate / opts.speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await send(encode_pcm(chunk, opts.encoding))
        result.sent.append(((start + len(chunk)) / rate, time.monotonic()))
    await send(ClientProtocol.control(m.Close()))


def _record(result: StreamResult, message: ServerMessage, at: float, on_message: OnMessage | None) -> None:
    if isinstance(message, m.Partial):
        result.partials.append((at, message))
    elif isinstance(message, m.Final):
        result.finals.append(message)
        result.final_times.append(at)
    elif isinstance(message, m.Closed):
        result.summary = message.summary
    elif isinstance(message, m.Error):
        result.error = message
    if on_message:
        on_message(message)


async def stream_file(
    url: str, path: str | Path, options: StreamOptions | None = None, on_message: OnMessage | None = None
) -> StreamResult:
    wav = read_wav(path)
    return await stream_audio(url, wav.samples, wav.sample_rate, options, on_message)


__all__ = [
    "DEFAULT_URL",
    "ProtocolError",
    "RayscribeError",
    "StreamOptions",
    "StreamResult",
    "stream_audio",
    "stream_file",
]
