"""A stand-in for the service that costs next to nothing: speaks protocol v1.1 over a real
WebSocket and answers each second of audio like the real server paces its messages (a partial,
a one-word final ending at that second, an ack), so the load generator can be measured and
tested without Ray or the model.

    python -m tests.unit.fake_server 8765   # serve on ws://127.0.0.1:8765 until killed
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ingest import messages as m

BYTES_PER_SECOND = 16000 * 2  # pcm_s16le at 16 kHz


async def handle(ws: ServerConnection) -> None:
    try:
        start = m.Start.model_validate_json(await ws.recv())
    except ConnectionClosed:
        return  # a probe that only checked the port
    session = uuid.uuid4().hex
    await ws.send(m.Ready(session_id=session, protocol=start.protocol, resume_token="t").model_dump_json())
    received = seq = 0
    try:
        async for data in ws:
            if isinstance(data, str):
                if '"close"' in data:
                    summary = m.Summary(
                        session_id=session,
                        audio_seconds=received / BYTES_PER_SECOND,
                        finals=seq,
                        words=seq,
                        decodes=seq,
                        decode_seconds=0.0,
                    )
                    await ws.send(m.Closed(summary=summary).model_dump_json())
                    await ws.close()
                    return
                continue
            before, received = received, received + len(data)
            if received // BYTES_PER_SECOND > before // BYTES_PER_SECOND:
                end = float(received // BYTES_PER_SECOND)
                word = m.WordTiming(word=f" w{seq}", start=end - 0.5, end=end, probability=1.0)
                await ws.send(m.Partial(text="x", start=end, end=end, audio_end=end).model_dump_json())
                final = m.Final(seq=seq, text=word.word, start=word.start, end=end, words=[word])
                await ws.send(final.model_dump_json())
                await ws.send(m.Ack(audio_offset=end).model_dump_json())
                seq += 1
    except ConnectionClosed:
        pass


async def start_server(port: int = 0) -> Server:
    return await serve(handle, "127.0.0.1", port, max_size=2**20)


async def _main(port: int) -> None:
    async with await start_server(port) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
