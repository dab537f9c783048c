"""The SDK's live API and the CLI's sources, against the loopback resume server of
test_client_resume (real WebSockets, real StreamSession, real store, a fake decoder)."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from ingest import messages as m
from ingest.audio import StreamResampler, encode_pcm, read_wav
from ingest.cli import SAMPLE_WAV, TerminalView
from ingest.client import Event, Reconnecting, SessionResumed, StreamOptions, open_stream, paced
from ingest.errors import UnsupportedAudio
from ingest.sources import decode_file, read_pcm
from tests.unit.test_client_resume import (
    RATE,
    WsTransport,
    after_final,
    assert_complete,
    running_server,
    speech,
)

if TYPE_CHECKING:
    from tests.unit.conftest import StoreFactory

pytestmark = pytest.mark.timeout(60)


def test_live_stream_resumes_inside_and_yields_each_final_once(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:
            server.on_sent = after_final(2, WsTransport.abort)  # the server drops the socket
            opts = StreamOptions(speed=4.0)
            events: list[Event] = []
            async with open_stream(server.url, RATE, opts) as stream:
                feeder = asyncio.create_task(stream.feed(paced(speech(6.0), RATE, opts)))
                async for event in stream:
                    events.append(event)
                await feeder
            assert_complete(stream.result, 6.0)
            finals = [e.seq for e in events if isinstance(e, m.Final)]
            assert finals == list(range(len(finals)))  # no final twice, none missing
            kinds = [type(e) for e in events]
            assert kinds.index(Reconnecting) < kinds.index(SessionResumed) < len(kinds) - 1
            assert isinstance(events[-1], m.Closed)

    asyncio.run(main())


def test_send_takes_pcm_bytes_and_end_closes_the_stream(store: StoreFactory) -> None:
    async def main() -> None:
        async with running_server(store) as server:
            async with open_stream(server.url, RATE, StreamOptions(realtime=False)) as stream:
                for chunk in np.array_split(speech(2.0), 20):
                    await stream.send(encode_pcm(chunk, "pcm_s16le"))
                await stream.end()
                events = [e async for e in stream]
            assert isinstance(events[0], m.Ready) and isinstance(events[-1], m.Closed)
            assert_complete(stream.result, 2.0)

    asyncio.run(main())


def test_unreachable_server_raises_from_the_iterator() -> None:
    async def main() -> None:
        async with open_stream("ws://127.0.0.1:9/v1/stream", RATE) as stream:
            with pytest.raises(OSError):
                async for _ in stream:
                    pass

    asyncio.run(main())


@pytest.mark.parametrize(("fmt", "codec"), [("flac", "flac"), ("ogg", "libopus"), ("mp3", "libmp3lame")])
def test_files_are_decoded_by_pyav(tmp_path: Path, fmt: str, codec: str) -> None:
    av = pytest.importorskip("av")
    wav = read_wav(SAMPLE_WAV)
    path = tmp_path / f"jfk.{fmt}"
    rate = 48000 if codec == "libopus" else 44100
    resampler = StreamResampler(16000, rate)
    with av.open(str(path), "w") as out:  # encoded by FFmpeg here, at a rate the client must convert
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        up = np.concatenate([resampler.push(wav.samples), resampler.flush()])
        frame = av.AudioFrame.from_ndarray(
            np.stack([up, up], axis=1).reshape(1, -1), format="flt", layout="stereo"
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    decoded = decode_file(path)
    assert decoded.sample_rate == 16000
    assert abs(decoded.duration - wav.duration) < 0.1
    n = min(len(decoded.samples), len(wav.samples)) - 4000
    # same audio: the best alignment within codec delay correlates strongly
    best = max(
        float(np.corrcoef(decoded.samples[lag : lag + n], wav.samples[:n])[0, 1]) for lag in range(0, 1200, 8)
    )
    assert best > 0.9, best


def test_undecodable_file_is_unsupported_audio(tmp_path: Path) -> None:
    pytest.importorskip("av")
    bad = tmp_path / "notes.mp3"
    bad.write_bytes(b"not audio at all" * 100)
    with pytest.raises(UnsupportedAudio):
        decode_file(bad)


def test_raw_pcm_from_a_pipe_keeps_split_frames_and_mixes_channels() -> None:
    stereo = np.stack([np.linspace(-0.5, 0.5, 1000), np.zeros(1000)], axis=1).astype(np.float32)
    raw = encode_pcm(stereo.reshape(-1), "f32le")

    class Trickle(io.BytesIO):
        def read1(self, size: int = -1) -> bytes:
            return super().read1(7)  # never a whole sample frame at a time

    async def collect() -> list[np.ndarray]:
        return [c async for c in read_pcm(Trickle(raw), "f32le", channels=2)]

    chunks = asyncio.run(collect())
    assert np.allclose(np.concatenate(chunks), stereo.mean(axis=1))
    with pytest.raises(UnsupportedAudio, match="inside a sample frame"):

        async def torn() -> AsyncIterator[np.ndarray]:
            async for c in read_pcm(io.BytesIO(raw[:-3]), "f32le"):
                yield c

        asyncio.run(_drain(torn()))


async def _drain(source: AsyncIterator[np.ndarray]) -> None:
    async for _ in source:
        pass


def test_terminal_view_rewrites_the_partial_line_in_place() -> None:
    out = io.StringIO()
    view = TerminalView(out, width=40)
    view(m.Partial(text="ask not", start=0.0, end=1.0, audio_end=1.0))
    view(m.Partial(text="ask not what your country can do for you and more", start=0, end=2, audio_end=2))
    view(m.Final(seq=0, text="Ask not", start=0.0, end=0.8, words=[]))
    rows = out.getvalue().split("\n")
    # the partials never ended a line: the finals scrolled, the partial was redrawn after it
    assert len(rows) == 2 and rows[0].endswith("   0.00s  Ask not")
    drawn = [p.split("\x1b[0m")[0] for p in rows[0].split("\r\x1b[2K\x1b[2m")[1:]]
    assert drawn[0] == "   ...  ask not"
    assert drawn[1].endswith("for you and more") and len(drawn[1]) <= 39  # one row, truncated at the left


def test_cli_reads_stdin_against_the_fake_server(tmp_path: Path) -> None:
    """`rayscribe - --channels 2` end to end in a subprocess (a real pipe); the fake server
    counts 16 kHz mono s16 bytes, so 3 s of stereo must arrive as 3 s."""
    from tests.unit.fake_server import start_server

    async def main() -> tuple[int, str]:
        server = await start_server()
        port = server.sockets[0].getsockname()[1]
        audio = encode_pcm(np.zeros(16000 * 3 * 2, np.float32), "pcm_s16le")  # 3 s, stereo
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ingest.cli",
            "-",
            "--rate",
            "16000",
            "--channels",
            "2",
            "--url",
            f"ws://127.0.0.1:{port}",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ},
        )
        stdout, _ = await asyncio.wait_for(proc.communicate(audio), 30)
        server.close()
        return proc.returncode or 0, stdout.decode()

    code, out = asyncio.run(main())
    assert code == 0, out
    assert "[closed] 3.0s audio" in out and "FINAL    2.50-  3.00s   w2" in out
