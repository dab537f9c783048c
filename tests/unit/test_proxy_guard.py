"""Backpressure in Serve's proxy (deployments/proxy_guard.py): each WebSocket's incoming bytes
are paced at the audio rate its `start` allows, and the server offers no permessage-deflate.
The socket test runs uvicorn (the server inside Serve's proxy) with the middleware and a real
websockets client that floods it, as the flood benchmark does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from deployments.proxy_guard import AudioMeter, Pace, PacedWebSockets, no_deflate

START = json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"})
REAL_TIME = 16000 * 2  # bytes per second of 16 kHz s16le


def _binary(n: int) -> dict[str, Any]:
    return {"type": "websocket.receive", "bytes": b"\0" * n}


def test_meter_allows_the_lead_then_paces_at_the_allowed_speed() -> None:
    pace = Pace(max_speed=4.0, max_lead_s=10.0, margin=1.25)
    meter = AudioMeter(pace, now=0.0)
    assert meter.feed({"type": "websocket.receive", "text": START}, 0.0) == 0.0
    lead = int(1.25 * 10.0 * REAL_TIME)
    assert meter.feed(_binary(lead - len(START)), 0.0) == 0.0  # the whole lead at once
    wait = meter.feed(_binary(REAL_TIME), 0.0)  # one more second of audio
    assert wait == pytest.approx(REAL_TIME / (1.25 * 4.0 * REAL_TIME))
    # after waiting that long the budget is back to zero: the next second waits as long
    assert meter.feed(_binary(REAL_TIME), wait) == pytest.approx(wait)


def test_meter_reads_the_format_only_from_a_start() -> None:
    pace = Pace(max_speed=1.0, max_lead_s=1.0, margin=1.0)
    stereo_f32 = AudioMeter(pace, now=0.0)
    stereo_f32.feed(
        {
            "type": "websocket.receive",
            "text": json.dumps({"type": "start", "sample_rate": 48000, "encoding": "f32le", "channels": 2}),
        },
        0.0,
    )
    assert stereo_f32.rate == 48000 * 4 * 2
    other = AudioMeter(pace, now=0.0)
    before = other.rate
    for text in ('{"type": "keepalive"}', '{"type": "start", "sample_rate": "x"}', '{"start"', "[1]"):
        other.feed({"type": "websocket.receive", "text": text}, 0.0)
    assert other.rate == before > REAL_TIME  # until a valid start: the largest format's rate
    assert other.feed({"type": "websocket.connect"}, 0.0) == 0.0


class _Counter:
    """An ASGI WebSocket app that accepts and counts the bytes it is handed."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            self.received += len(message.get("bytes") or b"")


class _Config(uvicorn.Config):
    pass  # no_deflate patches this subclass, not uvicorn's Config for the whole test run


def test_a_flood_is_paced_and_not_deflated() -> None:
    asyncio.run(_flood_paced())


async def _flood_paced() -> None:
    no_deflate(_Config)
    app = _Counter()
    pace = Pace(max_speed=1.0, max_lead_s=1.0, margin=1.0)
    config = _Config(
        PacedWebSockets(app, pace=pace), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )  # type: ignore[arg-type]
    assert config.ws_per_message_deflate is False
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # what Server.serve sets before startup
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await server.startup(sockets=[sock])  # listening when this returns
    url = f"ws://127.0.0.1:{sock.getsockname()[1]}/"
    frame = b"\0" * 16384  # silence: deflate would shrink it to a few bytes
    sent = 0
    try:
        async with connect(url) as ws:  # the client offers permessage-deflate by default
            assert not ws.protocol.extensions  # the server declined it
            await ws.send(START)
            loop = asyncio.get_running_loop()
            began = loop.time()
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                async with asyncio.timeout(2.0):
                    while True:
                        await ws.send(frame)
                        sent += len(frame)
            elapsed, received = loop.time() - began, app.received
            ws.transport.abort()  # no close handshake behind the paced backlog
    finally:
        await server.shutdown()
    allowed = REAL_TIME * (1.0 + elapsed) + len(frame)  # the lead, then real time
    assert REAL_TIME <= received <= allowed  # the lead at once, then no faster than allowed
    assert sent > 4 * allowed  # the client pushed far more: it waited on the socket
