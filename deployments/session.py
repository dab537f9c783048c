"""One WebSocket stream: protocol events -> LocalAgreement policy -> ASR -> messages.

Transport-agnostic: it talks to the socket through the small :class:`Transport` protocol,
and to the model through an async ``decode`` callable, so it can run against a fake socket.
With a :class:`SessionStore`, a v1.1 session is durable: each final is persisted with the
offset it advances before it is sent, and a later connection can ``resume`` it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from deployments import metrics
from deployments.archive import ArchivedSession, ArchiveWriter
from deployments.channels import ChannelSet, ChannelTransport
from deployments.hooks import Hooks, SessionHook, utterance_of
from deployments.session_state import SessionWriter
from deployments.store import NewSession, Progress, SessionStore, hash_token
from deployments.streaming import LocalAgreement, PolicyConfig, Update
from deployments.transcript import DecodeRequest, Hypothesis, Word
from deployments.vad import CHUNK_S, SpeechStart, StreamVad, VoiceEvent, VoiceEvents, VoiceTracker
from ingest import messages as m
from ingest.audio import TARGET_RATE
from ingest.errors import (
    HandshakeTimeout,
    IdleTimeout,
    InternalError,
    Overloaded,
    RayscribeError,
    SlowConsumer,
    StoreUnavailable,
    UnknownHook,
)
from ingest.protocol import (
    AudioEvent,
    CloseEvent,
    Event,
    FinalizeEvent,
    Limits,
    ResumeEvent,
    ServerProtocol,
    StartEvent,
    State,
)

log = logging.getLogger("ray.serve")
_MAX_FLUSH_PASSES = 4  # a closing flush re-decodes audio its decode skipped, this often
Decode = Callable[[DecodeRequest], Awaitable[Hypothesis]]


class Transport(Protocol):
    async def receive(self) -> str | bytes | None: ...  # None: the client went away

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int) -> None: ...


@dataclass(frozen=True)
class Deadlines:
    """How long a client may stay silent, and how long one send may block."""

    handshake_s: float = 10.0  # socket open -> start/resume
    idle_s: float = 60.0  # started: no audio and no keepalive
    send_s: float = 10.0  # one outbound message not taken by the client: slow consumer
    max_queued_bytes: int = 256 * 1024  # outbound messages waiting behind a blocked send


@dataclass
class _Stats:
    finals: int = 0
    words: int = 0
    decodes: int = 0
    decode_seconds: float = 0.0


class StreamSession:
    def __init__(
        self,
        session_id: str,
        transport: Transport,
        decode: Decode,
        policy: PolicyConfig,
        limits: Limits,
        store: SessionStore | None = None,
        deadlines: Deadlines | None = None,
        principal: str = "",
        archive: ArchiveWriter | None = None,
        hooks: Hooks | None = None,
        channel: int | None = None,
    ) -> None:
        self.session_id = session_id
        # which channel of a multi-channel session this one transcribes (None: a session of
        # its own; the metrics count sessions, not channels)
        self.channel = channel
        self.channels: ChannelSet | None = None  # a multi-channel session's channel sessions
        self.hooks = hooks  # the utterance handlers this server offers
        self.hook: SessionHook | None = None  # the one this session named (start.hook)
        self._utterance_from = 0  # index in self.finals where the open utterance begins
        self.deadlines = deadlines or Deadlines()
        self.principal = principal  # the API key id: a resume must present the same one
        self.dropped_partials = 0  # superseded partials never sent to a client behind
        self.store = store
        self.writer: SessionWriter | None = None
        self.transport = transport
        self.decode = decode
        self.protocol = ServerProtocol(limits)
        self.policy = LocalAgreement(policy)
        self.vad: StreamVad | None = None
        self.voice_events: VoiceEvents | None = None  # the client asked for vad_events
        # while an utterance's end is flushed: its finals and partials, held back so the last
        # final can carry speech_final before it is sent
        self._held: list[m.Final | m.Partial] | None = None
        self._start_vad()
        self.stats = _Stats()
        self._lock = asyncio.Lock()  # one decode at a time; flush waits for it
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._worker: asyncio.Task[None] | None = None
        # a fault found by a background task (decode loop, writer): the socket task ends the
        # stream with it, so the error and the close go out from the task that owns the socket
        self._fault: RayscribeError | None = None
        self._drain_reason: str | None = None
        self._faulted = asyncio.Event()
        self._fault_wait: asyncio.Task[Literal[True]] | None = None  # one waiter per stream
        self._done = asyncio.Event()  # run() has returned
        self.meter = metrics.StreamMetrics()
        self.archive = archive
        self.created = time.time()
        self.finals: list[m.Final] = []  # sent by this connection (the archive's rows)
        self._closed_by_client = False  # `close` ended the session (not merely this socket)

    @property
    def started(self) -> bool:
        """The client sent start or resume (a socket that has not holds a pending slot)."""
        return self.protocol.state != State.AWAITING_START

    async def run(self) -> None:
        try:
            while not self._closed and self.protocol.state < State.CLOSING:
                data = await self._receive()
                if data is None:
                    if not self._closed:
                        log.info("session %s: client disconnected", self.session_id)
                        self._closed = True  # nothing more can be sent to it
                    return
                now = time.monotonic()
                if isinstance(data, str):
                    self.protocol.receive_text(data, now)
                else:
                    self.protocol.receive_bytes(data, now)
                for event in self.protocol.events_received():
                    await self._on_event(event)
                await self._pump()
        except _Draining as d:
            await self._reconnect(d.reason)
        except RayscribeError as e:
            await self._fail(e)
        except Exception:
            log.exception("session %s failed", self.session_id)
            await self._fail(InternalError("internal server error"))
        finally:
            for task in (self._worker, self._fault_wait):
                if task is not None:
                    task.cancel()
            if self.hook is not None:
                self.hook.cancel()
            if self.channels is not None:
                self.channels.cancel()
            if self.writer is not None:
                # a dropped connection: keep what is committed; the session stays resumable
                await self.writer.stop()
            async with self._send_lock:
                pass  # a close started by the decode loop or the writer finishes first
            if self.channel is None:
                self.meter.ended(self.protocol.close_code, self.protocol.error)
            self._done.set()
            await self._archive_if_complete()

    async def _receive(self) -> str | bytes | None:
        """The next frame from the client, unless a background task reported a fault first."""
        if not self._faulted.is_set():
            if self._fault_wait is None:  # made once, not per frame: this is the hot path
                self._fault_wait = asyncio.ensure_future(self._faulted.wait())
            frame = asyncio.ensure_future(self.transport.receive())
            waiters: set[asyncio.Future[object]] = {frame, self._fault_wait}  # type: ignore[arg-type]
            waiting = self.protocol.state == State.AWAITING_START
            timeout = self.deadlines.handshake_s if waiting else self.deadlines.idle_s
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if frame.done():
                return frame.result()
            frame.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await frame
            if not self._faulted.is_set():  # the deadline passed: a silent socket holds a slot
                if waiting:
                    raise HandshakeTimeout(f"no start or resume within {timeout:g} s")
                raise IdleTimeout(f"no audio or keepalive for {timeout:g} s")
        if self._drain_reason is not None:
            raise _Draining(self._drain_reason)
        assert self._fault is not None
        raise self._fault

    async def _report(self, error: RayscribeError) -> None:
        """A background task's fault: hand it to the socket task (see ``_receive``)."""
        if self._fault is None:
            self._fault = error
        self._faulted.set()

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, StartEvent) and event.config.channels > 1:
            self._start_channels(event.config)
        elif isinstance(event, StartEvent):
            self._start_hook()
            token = await self._start_writer(event.config)
            ready = m.Ready(session_id=self.session_id, protocol=event.config.protocol, resume_token=token)
            self.protocol.send(ready)
            self._start_vad()
            if self.channel is None:
                self.meter.started(resumed=False)
            self._worker = asyncio.create_task(self._decode_loop())
        elif isinstance(event, ResumeEvent):
            await self._resume(event.request)
            self._start_hook()
            self.meter.started(resumed=True)
            self._worker = asyncio.create_task(self._decode_loop())
        elif isinstance(event, AudioEvent) and self.channels is not None:
            self.channels.feed(event.samples)
        elif isinstance(event, AudioEvent):
            await self._on_audio(event.samples)
        elif isinstance(event, FinalizeEvent) and self.channels is not None:
            self.protocol.send(m.Flushed(audio_end=round(await self.channels.finalize(), 3)))
        elif isinstance(event, FinalizeEvent):
            await self._flush()
            self.protocol.send(m.Flushed(audio_end=round(self.policy.audio_end, 3)))
        elif isinstance(event, CloseEvent) and self.channels is not None:
            transcript, summary = await self.channels.close()
            self._closed_by_client = True
            for part in transcript:  # one at a time: each leaves the outbound queue first
                self.protocol.send(part)
                await self._pump()
            self.protocol.send_closed(summary)
        elif isinstance(event, CloseEvent):
            await self._flush()
            if self.hook is not None:  # the last utterance's answer comes before `closed`
                await self._utterance_done()
                await self.hook.finish()
            # a fenced writer: another connection holds the session and finishes it
            self._closed_by_client = self.writer is None or await self.writer.close()
            self.protocol.send_closed(self._summary())

    async def _on_audio(self, samples: np.ndarray) -> None:
        probs = self.vad.process(samples) if self.vad is not None else []
        done = 0
        if self.voice_events is not None:
            # the policy gets the audio up to each event first: an utterance's end commits
            # exactly the audio before it, even when one frame also holds the next utterance
            frame_start = self.policy.audio_end
            for voice_event in self.voice_events.feed(probs):
                cut = round((voice_event.at - frame_start) * TARGET_RATE)
                cut = min(len(samples), max(done, cut))
                self._add_audio(samples[done:cut])
                done = cut
                await self._on_voice(voice_event)
        self._add_audio(samples[done:])
        self.policy.add_voice(probs)  # the decode policy's own VAD, when its config enables it
        if self.policy.ready() or self.policy.endpointed():
            self._wake.set()

    def _add_audio(self, samples: np.ndarray) -> None:
        if len(samples):
            self.policy.add_audio(samples)
            self.meter.audio(self.policy.audio_end, len(samples))

    async def _on_voice(self, event: VoiceEvent) -> None:
        if isinstance(event, SpeechStart):
            self.protocol.send(m.SpeechStarted(timestamp=round(event.timestamp, 3)))
            return
        # the utterance is over: commit it now, so a voice interface gets it whole at once
        self._held = []
        try:
            await self._flush()
        finally:
            held, self._held = self._held, None
        finals = [i for i, msg in enumerate(held) if isinstance(msg, m.Final)]
        for i, msg in enumerate(held):
            if finals and i == finals[-1]:
                msg = msg.model_copy(update={"speech_final": True})
            self.protocol.send(msg)
        # the utterance's last word if this or an earlier final committed one, else its speech
        # end; no later than the speech end: the flush decoded the pause too, and the last
        # word's timing can stretch over it (1.0 s past a sentence end in the e2e recording)
        words_end = self.policy.committed_end
        last = min(words_end, event.voice_end + CHUNK_S) if words_end > event.began else event.voice_end
        self.protocol.send(m.UtteranceEnd(last_word_end=round(last, 3)))
        await self._utterance_done()

    def _start_channels(self, config: m.Start) -> None:
        """A multi-channel session: a channel session per channel (deployments/channels.py)."""
        limits = dataclasses.replace(self.protocol.limits, max_frame_bytes=1 << 30)  # fed by us
        # the parent enforces the client's deadlines; a channel session is never idle on its own
        deadlines = dataclasses.replace(self.deadlines, idle_s=1e9, handshake_s=1e9)

        def make(channel: int, transport: ChannelTransport) -> StreamSession:
            return StreamSession(
                self.session_id,
                transport,
                self.decode,
                self.policy.config,
                limits,
                deadlines=deadlines,
                principal=self.principal,
                archive=self.archive,
                hooks=self.hooks,
                channel=channel,
            )

        if config.hook is not None:  # refused before anything starts, as for one channel
            self._check_hook(config.hook)
        self.channels = ChannelSet(config, make, self._relay, self._report)
        ready = m.Ready(session_id=self.session_id, protocol=config.protocol, channels=config.channels)
        self.protocol.send(ready)
        self.meter.started(resumed=False)

    async def _relay(self, message: m.AnyServerMessage) -> None:
        """A message from a task beside the socket's (a channel session's, ``channel`` set;
        the hook's answer) to the client, while the stream is open."""
        if self.protocol.state < State.CLOSED:
            self.protocol.send(message)
            await self._pump()

    def _start_hook(self) -> None:
        """The handler named by start.hook (a resume names it again through the stored start)."""
        name = self.protocol.config.hook if self.protocol.config is not None else None
        if name is not None:
            self.hook = SessionHook(self._check_hook(name), name, self._relay)

    def _check_hook(self, name: str) -> Hooks:
        if self.hooks is None:
            raise UnknownHook("this server offers no hooks")
        self.hooks.check(name)
        return self.hooks

    async def _utterance_done(self) -> None:
        """The finals since the last utterance end are one utterance: to the hook."""
        finals = self.finals[self._utterance_from :]
        self._utterance_from = len(self.finals)
        if self.hook is not None and finals:
            await self.hook.submit(utterance_of(self.session_id, finals))

    async def _start_writer(self, config: m.Start) -> str | None:
        """A v1.1 session with a store is durable: create it, return its resume token."""
        if self.store is None or not self.protocol.resumable:
            return None
        token = secrets.token_urlsafe(24)
        new = NewSession(config, hash_token(token, self.principal))
        writer = self._open_writer(self.store, 1, 0, Progress(0.0, [], 0), new)
        await writer.commit([], writer.progress)  # resumable from `ready` on
        return token

    def _open_writer(
        self,
        store: SessionStore,
        epoch: int,
        next_seq: int,
        progress: Progress,
        new: NewSession | None = None,
    ) -> SessionWriter:
        self.writer = SessionWriter(
            store, self.session_id, epoch, next_seq, progress, on_ack=self._ack, on_lost=self._report, new=new
        )
        self.writer.start()
        return self.writer

    async def _resume(self, request: m.Resume) -> None:
        if self.store is None:
            raise StoreUnavailable("this server keeps no session state; start a new session")
        record = await self.store.resume(
            request.session_id, request.resume_token, request.last_seq, self.principal
        )
        self.session_id = record.session_id
        self.protocol.accept_resume(record.config, max(record.progress.offset, request.audio_from or 0.0))
        stored = record.progress.offset
        # the client can no longer resend audio before audio_from: skip it, say so in resumed
        offset = max(stored, request.audio_from or 0.0)
        self.policy.restore(offset, record.progress.context, record.progress.pending)
        self._start_vad(offset)
        self.stats.finals, self.stats.words = record.next_seq, record.progress.words
        self._open_writer(self.store, record.epoch, record.next_seq, record.progress)
        resumed = m.Resumed(
            session_id=self.session_id,
            audio_offset=round(offset, 6),
            next_seq=record.next_seq,
            skipped_from=round(stored, 6) if offset > stored else None,
        )
        self.protocol.send(resumed)
        for final in record.missed:
            self.protocol.send(final)
        log.info(
            "session %s resumed at %.2f s (epoch %d, %d missed finals)",
            self.session_id,
            offset,
            record.epoch,
            len(record.missed),
        )
        if offset > stored:
            log.warning(
                "session %s: audio %.2f-%.2f s lost (client replay buffer)", self.session_id, stored, offset
            )

    async def _ack(self, offset: float) -> None:
        if self.protocol.state == State.STREAMING:
            self.protocol.send(m.Ack(audio_offset=round(offset, 6)))
            await self._pump()

    async def drain(self, reason: str, timeout_s: float = 5.0) -> None:
        """This replica is going away: persist, tell a v1.1 client to resume elsewhere, close
        1012.  The socket task does it (see ``_receive``); this waits until it has."""
        self._drain_reason = reason
        self._faulted.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout_s)

    async def _reconnect(self, reason: str) -> None:
        async with self._lock:  # not in the middle of a commit
            if self.writer is not None:
                await self.writer.stop()
            self.protocol.reconnect(reason)
        await self._pump()

    async def _decode_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                async with self._lock:
                    endpoint = self.policy.endpointed() and not self.policy.backlogged()
                    due = endpoint or self.policy.ready() or self.policy.backlogged()
                    if not due or self.protocol.state >= State.CLOSING:
                        continue
                    hyp = await self._decode_checked(final=endpoint)
                    update = self.policy.flush(hyp) if endpoint else self.policy.apply(hyp)
                    await self._emit(update, self.policy.window_end)
                await self._pump()
                if self.policy.ready() or self.policy.backlogged() or self.policy.endpointed():
                    self._wake.set()
        except asyncio.CancelledError:
            raise
        except RayscribeError as e:
            await self._report(e)
        except Exception:
            log.exception("session %s: decode failed", self.session_id)
            await self._report(InternalError("transcription failed"))

    async def _flush(self) -> None:
        async with self._lock:
            while self.policy.backlogged():  # 30 s at a time, then the tail
                request = self._next_request()
                await self._emit(self.policy.apply(await self._decode(request)), self.policy.window_end)
            for _ in range(_MAX_FLUSH_PASSES):  # again while a pass commits words but not all
                if len(self.policy.buffer) == 0:
                    return
                update = self.policy.flush(await self._decode_checked(final=True))
                await self._emit(update, self.policy.audio_end)
                if not update.committed or not self.policy.uncovered():
                    return

    def _start_vad(self, offset: float = 0.0) -> None:
        """A fresh voice-activity model state (a new stream, or one resumed at ``offset``):
        for the decode policy when its config enables it, and for the client's vad_events
        (which need it whatever the decode policy does)."""
        config = self.protocol.config
        events = config is not None and config.vad_events
        if self.policy.config.vad.enabled or events:
            self.vad = StreamVad()
        if self.policy.config.vad.enabled and self.policy.voice is None:
            self.policy.voice = VoiceTracker(self.policy.config.vad)
        if config is not None and config.vad_events:
            # a resume gets fresh events too: nothing of the old connection's VAD state is
            # persisted, and VoiceEvents keeps the seam from announcing speech twice
            self.voice_events = VoiceEvents.create(self.policy.config.vad, config.utterance_end_s, offset)

    def _next_request(self, final: bool = False) -> DecodeRequest:
        if self.policy.overflowing():
            limit = self.policy.config.max_backlog_s
            raise Overloaded(f"the stream fell more than {limit:.0f} s behind real time")
        return self.policy.request(final=final)

    async def _decode_checked(self, final: bool) -> Hypothesis:
        """Decode the buffer, decoder slips checked and retried (``LocalAgreement.checked``)."""
        steps = self.policy.checked(self._next_request(final=final), final)
        request = next(steps)
        while True:
            try:
                request = steps.send(await self._decode(request))
            except StopIteration as done:
                hyp: Hypothesis = done.value
                return hyp

    async def _decode(self, request: DecodeRequest) -> Hypothesis:
        started = time.perf_counter()
        # the ASR replica serves streams at real-time pace first (deployments/fairness.py)
        ahead = self.protocol.ahead_s(time.monotonic())
        hyp = await self.decode(dataclasses.replace(request, ahead_s=ahead))
        took = time.perf_counter() - started
        self.stats.decodes += 1
        self.stats.decode_seconds += took
        self.policy.decoded_in(took, hyp.engine_busy)
        return hyp

    async def _emit(self, update: Update, audio_end: float) -> None:
        finals = [_final(self.stats.finals, update.committed)] if update.committed else []
        if self.voice_events is not None:  # vad_events: every final says whether it ends speech
            finals = [f.model_copy(update={"speech_final": False}) for f in finals]
        if finals:
            self.stats.finals += 1
            self.stats.words += len(update.committed)
        if self.writer is not None and (finals or self.policy.buffer_offset > self.writer.progress.offset):
            # durable before it is sent: a resumed connection replays it, never re-decodes it
            context = self.policy.context()
            progress = Progress(self.policy.buffer_offset, context, self.stats.words, self.policy.pending)
            await self.writer.commit(finals, progress)
        for final in finals:
            self._send(final)
        self.finals.extend(finals)
        self.meter.committed(update.committed)
        config = self.protocol.config
        if config is not None and config.interim_results and self.protocol.state == State.STREAMING:
            words = update.partial
            self._send(
                m.Partial(
                    text="".join(w.text for w in words).strip(),
                    start=round(words[0].start, 3) if words else round(audio_end, 3),
                    end=round(words[-1].end, 3) if words else round(audio_end, 3),
                    audio_end=round(audio_end, 3),
                )
            )
            self.meter.partial(audio_end)

    async def _archive_if_complete(self) -> None:
        """Hand a complete session to the archive, once (when: ``archive.submit_ended``)."""
        if self.archive is not None:
            durable = self.store if self.writer is not None else None
            key = self.principal or None
            ended = ArchivedSession(self.session_id, self.created, key, self.finals, self.channel or 0)
            epoch = self.writer.epoch if self.writer is not None else 0
            await self.archive.submit_ended(ended, durable, closed=self._closed_by_client, epoch=epoch)

    def _send(self, message: m.Final | m.Partial) -> None:
        if self._held is not None:
            self._held.append(message)
        else:
            self.protocol.send(message)

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
        # shielded: a task cancelled mid-close (the decode loop, the writer's heartbeat) must
        # not cut the error message and close code it is sending
        await asyncio.shield(self._send_pending())

    async def _send_pending(self) -> None:
        """Send what the protocol queued.  One send at a time: while a client does not read,
        producers wait here (the decode loop pauses, the socket task stops reading audio), so
        what is queued stays bounded; superseded partials are dropped, finals never; a send
        blocked past ``send_s`` or a queue past ``max_queued_bytes`` closes the stream with
        ``slow_consumer`` (a v1.1 client resumes: its finals are in the store)."""
        async with self._send_lock:
            if self._closed:
                return
            try:
                # again until nothing is left: other tasks may queue messages while a send waits
                while out := self._coalesce(self.protocol.data_to_send()):
                    for text in out:
                        async with asyncio.timeout(self.deadlines.send_s):  # no extra task per send
                            await self.transport.send_text(text)
            except TimeoutError:
                self._closed = True
                slow = SlowConsumer(f"the client read nothing for {self.deadlines.send_s:g} s")
                self.protocol.fail(slow)
                if self._fault is None:  # the socket task ends the stream (see _receive)
                    self._fault = slow
                self._faulted.set()
                log.info("session %s: slow consumer, closing", self.session_id)
                with contextlib.suppress(TimeoutError):  # best effort: the client is not reading
                    await asyncio.wait_for(self.transport.close(SlowConsumer.close_code), 1.0)
                return
            if self.protocol.close_code is not None:
                self._closed = True
                await self.transport.close(self.protocol.close_code)

    def _coalesce(self, out: list[str]) -> list[str]:
        """Only the newest partial of a batch is worth sending; bound what waits."""
        partials = [i for i, t in enumerate(out) if t.startswith('{"type":"partial"')]
        if len(partials) > 1:
            drop = set(partials[:-1])
            self.dropped_partials += len(drop)
            out = [t for i, t in enumerate(out) if i not in drop]
        if sum(len(t) for t in out) > self.deadlines.max_queued_bytes:
            self.protocol.fail(SlowConsumer("too many messages wait for the client"))
            out = [t for t in out if not t.startswith('{"type":"partial"')] + self.protocol.data_to_send()
        return out


class _Draining(Exception):
    """Raised in the socket task when the replica drains (not an error of the stream)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
