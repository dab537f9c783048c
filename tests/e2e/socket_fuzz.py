"""A socket-level fuzzer for a running rayscribe: random and malformed frames over real
WebSockets, raw TCP for what a WebSocket library will not send (half-open connections, drops
mid-handshake, broken frames).  Every connection must end in a close code from the protocol's
table (or a clean drop); the server must never crash.

    python -m tests.e2e.socket_fuzz ws://127.0.0.1:8000/v1/stream --connections 2000 --key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

START = json.dumps({"type": "start", "sample_rate": 16000})
# every close code the server may end a fuzzed connection with (docs/protocol.md), plus the
# WebSocket layer's own: 1000 normal, 1006 dropped, 1007 bad UTF-8 / 1009 too big (the proxy)
EXPECTED_CLOSES = {1000, 1002, 1003, 1006, 1007, 1009, 1011, 1013, 4008, 4401, 4403, 4404, 4408, 4413, 4429}


@dataclass
class FuzzReport:
    inputs: Counter[str] = field(default_factory=Counter)
    closes: Counter[int | None] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.inputs.values())


def random_json(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth > 3 or roll < 0.4:
        return rng.choice([None, True, 1, -1, 2**70, 1.5, "x", "start", "", "\u0000", "\ud7ff"])
    if roll < 0.7:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["type", "sample_rate", "encoding", "protocol", "session_id", "resume_token", "last_seq", "zz"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def text_payload(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return json.dumps(random_json(rng))
    if kind == 1:
        n = rng.choice([10, 100, 1000, 5000])
        return "[" * n + "]" * n
    if kind == 2:
        return json.dumps({"type": rng.choice(["start", "resume", "finalize", "close", "keepalive"])})
    if kind == 3:
        return "x" * rng.choice([100, 20_000, 200_000])  # over the text limit
    if kind == 4:
        return START
    return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(64)))


async def ws_case(url: str, headers: dict[str, str], rng: random.Random) -> tuple[str, int | None]:
    """One WebSocket connection with a random mix of frames."""
    name = "ws_mixed"
    async with connect(url, additional_headers=headers, max_size=2**24, open_timeout=20) as ws:
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            for _ in range(rng.randint(1, 12)):
                roll = rng.random()
                if roll < 0.35:
                    await ws.send(text_payload(rng))
                elif roll < 0.55:
                    await ws.send(rng.randbytes(rng.choice([0, 1, 3, 320, 3200, 70_000])))
                elif roll < 0.65:
                    name = "ws_invalid_utf8"
                    await ws.send(b'{"type": "start", "x": "\xff\xfe"}', text=True)
                elif roll < 0.72:
                    name = "ws_fragmented"
                    await ws.send(iter(['{"type": ', '"start", "sample_', 'rate": 16000}']))
                elif roll < 0.8:
                    name = "ws_ping_flood"
                    for _ in range(200):
                        await ws.ping()
                elif roll < 0.85:
                    name = "ws_huge"
                    await ws.send(bytes(17 * 2**20))  # over the proxy's 16 MiB
                else:
                    await ws.send(START)
                    await ws.send(bytes(3200))
            async with asyncio.timeout(15):
                while True:
                    await ws.recv()
        return name, ws.close_code


async def raw_case(url: str, headers: dict[str, str], rng: random.Random) -> tuple[str, int | None]:
    """Below the WebSocket library: half-open handshakes, drops mid-frame, garbage bytes."""
    u = urlparse(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (
        f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()
    kind = rng.randrange(4)
    try:
        if kind == 0:  # drop in the middle of the handshake
            writer.write(request[: rng.randrange(1, len(request))])
            await writer.drain()
            return "raw_drop_mid_handshake", None
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(20):
            await reader.readuntil(b"\r\n\r\n")
        if kind == 1:  # half-open: handshake done, then nothing, then gone
            return "raw_half_open", None
        if kind == 2:  # a frame header promising more than is sent, then drop
            writer.write(bytes([0x82, 0xFF]) + struct.pack(">Q", 2**40) + os.urandom(4) + b"abc")
            await writer.drain()
            return "raw_truncated_frame", None
        writer.write(os.urandom(rng.randrange(1, 512)))  # garbage where frames belong
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            async with asyncio.timeout(10):
                await reader.read(1024)
        return "raw_garbage", None
    except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
        return f"raw_{kind}_refused", None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def fuzz(
    url: str, connections: int, seed: int = 0, api_key: str | None = None, concurrency: int = 8
) -> FuzzReport:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    report = FuzzReport()
    gate = asyncio.Semaphore(concurrency)
    cases: list[Callable[[str, dict[str, str], random.Random], Awaitable[tuple[str, int | None]]]] = [
        ws_case,
        ws_case,
        ws_case,
        raw_case,
    ]

    async def one(i: int) -> None:
        case_rng = random.Random(rng.random())
        case = case_rng.choice(cases)
        async with gate:
            try:
                name, code = await case(url, headers, case_rng)
            except (InvalidHandshake, OSError, TimeoutError) as e:
                name, code = f"{case.__name__}_refused:{type(e).__name__}", None
            except Exception as e:  # noqa: BLE001  the fuzzer reports, the test decides
                report.unexpected.append(f"{case.__name__}: {type(e).__name__}: {e}")
                return
        report.inputs[name] += 1
        report.closes[code] += 1
        if code is not None and code not in EXPECTED_CLOSES:
            report.unexpected.append(f"{name}: close {code}")

    await asyncio.gather(*(one(i) for i in range(connections)))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--key", default=os.environ.get("RAYSCRIBE_API_KEY"))
    args = parser.parse_args()
    report = asyncio.run(fuzz(args.url, args.connections, args.seed, args.key))
    print(
        json.dumps(
            {
                "inputs": report.inputs,
                "closes": {str(k): v for k, v in report.closes.items()},
                "unexpected": report.unexpected,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
