"""One WebSocket stream: protocol events -> LocalAgreement policy -> ASR -> messages.

Transport-agnostic: it talks to the socket through the small :class:`Transport` protocol,
and to the model through an async ``decode`` callable, so it can run against a fake socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from deployments.streaming import LocalAgreement, PolicyConfig, Update
from deployments.transcript import DecodeRequest, Hypothesis, Word
from ingest import messages as m
from ingest.audio import TARGET_RATE
from ingest.errors import InternalError, Overloaded, RayscribeError
from ingest.protocol import (
    AudioEvent,
    CloseEvent,
    Event,
    FinalizeEvent,
    Limits,
    ServerProtocol,
    StartEvent,
    State,
)

log = logging.getLogger("ray.serve")
Decode = Callable[[DecodeRequest], Awaitable[Hypothesis]]


class Transport(Protocol):
    async def receive(self) -> str | bytes | None: ...  # None: the client went away

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int) -> None: ...


@dataclass
class _Stats:
    finals: int = 0
    words: int = 0
    decodes: int = 0
    decode_seconds: float = 0.0


class StreamSession:
    def __init__(
        self, session_id: str, transport: Transport, decode: Decode, policy: PolicyConfig, limits: Limits
    ) -> None:
        self.session_id = session_id
        self.transport = transport
        self.decode = decode
        self.protocol = ServerProtocol(limits)
        self.policy = LocalAgreement(policy)
        self.stats = _Stats()
        self._lock = asyncio.Lock()  # one decode at a time; flush waits for it
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._worker: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            while not self._closed and self.protocol.state < State.CLOSING:
                data = await self.transport.receive()
                if data is None:
                    log.info("session %s: client disconnected", self.session_id)
                    return
                if isinstance(data, str):
                    self.protocol.receive_text(data)
                else:
                    self.protocol.receive_bytes(data)
                for event in self.protocol.events_received():
                    await self._on_event(event)
                await self._pump()
        except RayscribeError as e:
            await self._fail(e)
        except Exception:
            log.exception("session %s failed", self.session_id)
            await self._fail(InternalError("internal server error"))
        finally:
            if self._worker is not None:
                self._worker.cancel()

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, StartEvent):
            self.protocol.send(m.Ready(session_id=self.session_id))
            self._worker = asyncio.create_task(self._decode_loop())
        elif isinstance(event, AudioEvent):
            self.policy.add_audio(event.samples)
            if self.policy.ready():
                self._wake.set()
        elif isinstance(event, FinalizeEvent):
            await self._flush()
            self.protocol.send(m.Flushed(audio_end=round(self.policy.audio_end, 3)))
        elif isinstance(event, CloseEvent):
            await self._flush()
            self.protocol.send_closed(self._summary())

    async def _decode_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                async with self._lock:
                    if not self.policy.ready() or self.protocol.state >= State.CLOSING:
                        continue
                    request = self._next_request()
                    hyp = await self._decode(request)
                    update = self.policy.apply(hyp)
                    self._emit(update, request.offset + len(request.audio) / TARGET_RATE)
                await self._pump()
                if self.policy.ready():
                    self._wake.set()
        except asyncio.CancelledError:
            raise
        except RayscribeError as e:
            await self._fail(e)
        except Exception:
            log.exception("session %s: decode failed", self.session_id)
            await self._fail(InternalError("transcription failed"))

    async def _flush(self) -> None:
        async with self._lock:
            if len(self.policy.buffer) == 0:
                return
            hyp = await self._decode(self._next_request())
            self._emit(self.policy.flush(hyp), self.policy.audio_end)

    def _next_request(self) -> DecodeRequest:
        if self.policy.overflowing():
            raise Overloaded("the stream fell more than 30 s behind real time")
        return self.policy.request()

    async def _decode(self, request: DecodeRequest) -> Hypothesis:
        started = time.perf_counter()
        hyp = await self.decode(request)
        self.stats.decodes += 1
        self.stats.decode_seconds += time.perf_counter() - started
        return hyp

    def _emit(self, update: Update, audio_end: float) -> None:
        if update.committed:
            self.protocol.send(_final(self.stats.finals, update.committed))
            self.stats.finals += 1
            self.stats.words += len(update.committed)
        config = self.protocol.config
        if config is not None and config.interim_results and self.protocol.state == State.STREAMING:
            words = update.partial
            self.protocol.send(
                m.Partial(
                    text="".join(w.text for w in words).strip(),
                    start=round(words[0].start, 3) if words else round(audio_end, 3),
                    end=round(words[-1].end, 3) if words else round(audio_end, 3),
                    audio_end=round(audio_end, 3),
                )
            )

    def _summary(self) -> m.Summary:
        return m.Summary(
            session_id=self.session_id,
            audio_seconds=round(self.policy.audio_end, 3),
            finals=self.stats.finals,
            words=self.stats.words,
            decodes=self.stats.decodes,
            decode_seconds=round(self.stats.decode_seconds, 3),
        )

    async def _fail(self, error: RayscribeError) -> None:
        self.protocol.fail(error)
        await self._pump()

    async def _pump(self) -> None:
        async with self._send_lock:
            if self._closed:
                return
            for text in self.protocol.data_to_send():
                await self.transport.send_text(text)
            if self.protocol.close_code is not None:
                self._closed = True
                await self.transport.close(self.protocol.close_code)


def _final(seq: int, words: list[Word]) -> m.Final:
    return m.Final(
        seq=seq,
        text="".join(w.text for w in words).strip(),
        start=round(words[0].start, 3),
        end=round(words[-1].end, 3),
        words=[
            m.WordTiming(
                word=w.text.strip(),
                start=round(w.start, 3),
                end=round(w.end, 3),
                probability=round(w.probability, 4),
            )
            for w in words
        ],
    )
