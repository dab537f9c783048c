"""Backpressure for WebSocket audio in Ray Serve's HTTP proxy (issue 8, floods).

Serve's proxy reads every WebSocket message off the socket as fast as it arrives and queues it,
unbounded, for the replica (``proxy_asgi_receive``), so the ingress's rate limit only sees audio
after the proxy has read, decompressed and relayed it.  A client that negotiated
permessage-deflate (the websockets library and browsers do by default) sent 256 KiB frames of
silence as a few hundred bytes on the wire: 63,000 s of audio in 10 s, the proxy at half a core
inflating it, and the session never got its ``ready``.

:class:`PacedWebSockets` sits in front of the proxy (Serve's
HTTP proxy callback, set by :func:`cluster.runtime.proxy_env`):
each connection's incoming bytes are paced at the audio rate the protocol allows
(``max_lead_s`` of audio at once, then ``max_speed`` x real time), times ``margin`` so a
client that is too fast still gets the ingress's typed ``rate_limited`` error.  Pacing is
backpressure: the proxy stops pulling messages, the server's receive queue fills, TCP
stops the sender.  Nothing is dropped, and a client within the limits never waits.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from cluster.runtime import PROXY_PACE_ENV
from ingest.audio import BYTES_PER_SAMPLE
from ingest.protocol import Limits

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

# before a `start` says the format (a resume, the Deepgram endpoint): the largest one accepted
_MAX_RATE = 48000 * 4 * 8  # bytes per second of audio: 48 kHz float32, 8 channels


@dataclass(frozen=True)
class Pace:
    max_speed: float = Limits.max_speed
    max_lead_s: float = Limits.max_lead_s
    margin: float = 1.25

    @classmethod
    def from_env(cls) -> Pace:
        """As the process that started Ray set it (:func:`cluster.runtime.proxy_env`)."""
        raw = os.environ.get(PROXY_PACE_ENV)
        return cls(**json.loads(raw)) if raw else cls()


class AudioMeter:
    """One connection's byte budget (sans-I/O): a token bucket holding ``max_lead_s`` of audio,
    refilled at ``max_speed`` x the real-time byte rate, both times ``margin``.  The rate is
    the largest the protocol accepts until a ``start`` message names the format."""

    def __init__(self, pace: Pace, now: float) -> None:
        self.pace = pace
        self.rate = self.burst = self.tokens = 0.0
        self._set_rate(_MAX_RATE)
        self.at = now

    def _set_rate(self, audio_bytes_per_s: float) -> None:
        rate = self.pace.margin * self.pace.max_speed * audio_bytes_per_s
        burst = self.pace.margin * self.pace.max_lead_s * audio_bytes_per_s
        self.tokens = min(self.tokens, burst) if self.burst else burst
        self.rate, self.burst = rate, burst

    def feed(self, message: Message, now: float) -> float:
        """Seconds to wait before taking the next message, after this one."""
        if message.get("type") != "websocket.receive":
            return 0.0
        text, data = message.get("text"), message.get("bytes")
        if text is not None:
            self._read_start(text)
        size = len(data) if data is not None else len(text or "")
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def _read_start(self, text: str) -> None:
        if len(text) > 4096 or '"start"' not in text:
            return  # only a start message sets the format; anything else costs its bytes
        try:
            start = json.loads(text)
            per_second = (
                int(start.get("sample_rate", 16000))
                * BYTES_PER_SAMPLE.get(str(start.get("encoding", "pcm_s16le")), 4)
                * int(start.get("channels", 1))
            )
        except (ValueError, TypeError, AttributeError):
            return  # malformed: the ingress answers it with a typed error; keep the budget
        if start.get("type") == "start" and 0 < per_second <= _MAX_RATE:
            self._set_rate(per_second)


class PacedWebSockets:
    """ASGI middleware: WebSocket messages are handed on no faster than the :class:`AudioMeter`
    allows; HTTP passes through."""

    def __init__(self, app: ASGIApp, pace: Pace | None = None) -> None:
        self.app = app
        self.pace = pace or Pace()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket":
            await self.app(scope, receive, send)
            return
        meter = AudioMeter(self.pace, time.monotonic())

        async def paced() -> Message:
            message = await receive()
            wait = meter.feed(message, time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
            return message

        await self.app(scope, paced, send)


def middlewares() -> list[Any]:
    """Serve's HTTP proxy callback: the middlewares its proxies run.  Also turns
    permessage-deflate off for the proxy's server (see :func:`no_deflate`)."""
    import uvicorn.config
    from starlette.middleware import Middleware

    no_deflate(uvicorn.config.Config)
    return [Middleware(PacedWebSockets, pace=Pace.from_env())]


def no_deflate(config: type) -> None:
    """Make ``config`` (uvicorn's Config) refuse permessage-deflate.  The server inflates
    every frame of a TCP read at once, before any backpressure applies: 256 KiB of silence
    arrives as a few hundred bytes, and the proxy spent half a core inflating a flood that pacing
    had already slowed.  Audio gains little from deflate.  Serve passes no WebSocket
    options to uvicorn, and its proxy builds its Config after calling this callback."""
    original = config.__init__  # type: ignore[misc]
    if getattr(original, "_no_deflate", False):
        return

    @functools.wraps(original)
    def init(self: object, *args: Any, **kwargs: Any) -> None:
        kwargs["ws_per_message_deflate"] = False
        original(self, *args, **kwargs)

    init._no_deflate = True  # type: ignore[attr-defined]
    config.__init__ = init  # type: ignore[misc]
