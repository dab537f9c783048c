"""Client SDK: stream audio to a rayscribe server and collect what comes back.

    result = await stream_file("ws://127.0.0.1:8000/v1/stream", "talk.wav")
    print(result.text)

Live sources (a microphone, a pipe): open a stream, push audio, iterate over typed events:

    async with open_stream(url, sample_rate=16000) as stream:
        asyncio.create_task(stream.feed(chunks))   # or: await stream.send(chunk) yourself
        async for event in stream:                 # m.Partial, m.Final, SessionResumed, ...
            ...
    print(stream.result.text)

Audio is captured in ``chunk_s`` frames, at real-time pace by default (``realtime=False`` sends
as fast as the socket takes it).  Every message is timestamped on arrival so the load tester can
measure latency against the capture timeline.

Sessions survive failures (protocol v1.1): captured audio stays in a bounded replay buffer until
the server acknowledges it; when the connection drops, the server closes with 1012 or sends
``reconnect``, the client reconnects with exponential backoff and jitter, resumes the session and
resends from the server's ``audio_offset``.  Capture goes on meanwhile.  No final is handed to the
caller twice.  Resumes and lost audio are visible as :class:`SessionResumed` / :class:`AudioGap`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import TracebackType

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ingest import messages as m
from ingest.audio import decode_pcm, encode_pcm, read_wav
from ingest.errors import Overloaded, ProtocolError, RayscribeError
from ingest.protocol import ClientProtocol
from ingest.replay import ReplayBuffer

DEFAULT_URL = "ws://127.0.0.1:8000/v1/stream"
ServerMessage = m.AnyServerMessage
# errors after which resuming the same session can succeed (the server or its store recovers)
RETRYABLE_ERRORS = {"overloaded", "store_unavailable", "internal_error", "model_error", "slow_consumer"}
API_KEY_ENV = "RAYSCRIBE_API_KEY"


def _told_busy(error: Exception) -> bool:
    """The server took the connection and closed it with 1013 (try again later): busy, not
    gone (a replica at its session limit, or a burst of connections waiting to start)."""
    return (
        isinstance(error, ConnectionClosed)
        and error.rcvd is not None
        and error.rcvd.code == Overloaded.close_code
    )


def _env_api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None


@dataclass(frozen=True)
class Reconnecting:
    """The connection was lost; the client is about to try to resume (``attempt`` from 1)."""

    attempt: int
    reason: str


@dataclass(frozen=True)
class SessionResumed:
    """The session continues on a new connection."""

    session_id: str
    attempt: int
    disconnected_at: float  # monotonic time the old connection was lost
    resumed_at: float  # monotonic time ``resumed`` arrived
    audio_offset: float  # stream seconds the audio was resent from
    resent_s: float  # captured audio resent on the new connection
    missed_finals: int  # finals the server replayed
    next_seq: int  # finals from this seq on were decoded after the resume

    @property
    def downtime_s(self) -> float:
        return self.resumed_at - self.disconnected_at


@dataclass(frozen=True)
class AudioGap:
    """Audio lost to a replay-buffer overflow during an outage: the server skips it on resume
    (``resumed.skipped_from``); stream time stays aligned."""

    start_s: float
    end_s: float


ClientEvent = Reconnecting | SessionResumed | AudioGap
OnMessage = Callable[[ServerMessage | ClientEvent], None]


@dataclass(frozen=True)
class StreamOptions:
    realtime: bool = True  # pace audio like a live microphone
    speed: float = 1.0  # with realtime: 2.0 plays twice as fast as real time
    chunk_s: float = 0.1  # audio per binary frame
    encoding: m.Encoding = "pcm_s16le"
    interim_results: bool = True
    # voice-activity events: speech_started / utterance_end, and speech_final on finals
    vad_events: bool = False
    utterance_end_ms: int | None = None  # with vad_events: the server's default (1000) if None
    # a handler the server offers that gets each utterance (needs vad_events); its answers
    # arrive as hook_result / hook_error messages
    hook: str | None = None
    # interleaved channels, each transcribed on its own (samples: (frames, channels)); such a
    # session speaks v1 (not resumable yet) and ends with the merged transcript
    channels: int = 1
    open_timeout_s: float = 30.0
    resume: bool = True  # speak v1.1: resume the session after a dropped connection
    replay_buffer_s: float = 60.0  # unacknowledged audio kept for a resume
    reconnect_budget_s: float = 60.0  # give up when no resume succeeds for this long
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    # sent as Authorization: Bearer (never in the URL); default: $RAYSCRIBE_API_KEY
    api_key: str | None = field(default_factory=_env_api_key, repr=False)


@dataclass
class StreamResult:
    session_id: str | None = None
    finals: list[m.Final] = field(default_factory=list)
    partials: list[tuple[float, m.Partial]] = field(default_factory=list)  # (arrival, msg)
    final_times: list[float] = field(default_factory=list)  # arrival of each final
    summary: m.Summary | None = None
    error: m.Error | None = None
    close_code: int | None = None
    sent: list[tuple[float, float]] = field(default_factory=list)  # (audio seconds captured, at)
    resumes: list[SessionResumed] = field(default_factory=list)
    gaps: list[AudioGap] = field(default_factory=list)
    # vad_events: speech_started and utterance_end, in order, with their arrival times
    voice: list[tuple[float, m.SpeechStarted | m.UtteranceEnd]] = field(default_factory=list)
    hooks: list[m.HookResult | m.HookError] = field(default_factory=list)  # start.hook's answers
    transcript: m.Transcript | None = None  # multi-channel: every channel's finals in time order
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(f.text for f in self.finals).strip()

    def record(self, message: ServerMessage, at: float) -> None:
        """Keep what the latency figures need from a server message that arrived ``at``."""
        if isinstance(message, m.Final):
            self.finals.append(message)
            self.final_times.append(at)
        elif isinstance(message, m.Partial):
            self.partials.append((at, message))
        elif isinstance(message, m.SpeechStarted | m.UtteranceEnd):
            self.voice.append((at, message))
        elif isinstance(message, m.HookResult | m.HookError):
            self.hooks.append(message)
        elif isinstance(message, m.Transcript):  # in parts: one transcript
            before = self.transcript.segments if self.transcript is not None else []
            self.transcript = message.model_copy(update={"segments": before + message.segments})
        elif isinstance(message, m.Closed):
            self.summary = message.summary
        elif isinstance(message, m.Error):
            self.error = message

    def sent_time(self, audio_s: float) -> float:
        """When the audio at stream second ``audio_s`` had been captured (first sent)."""
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


class _Outcome(Enum):
    DONE = 0  # closed, or a fatal error: stop
    RETRY = 1  # connection lost or server asked to reconnect: resume


class _Session:
    """One logical stream across any number of connections."""

    def __init__(self, url: str, rate: int, opts: StreamOptions, on_message: OnMessage | None) -> None:
        self.url, self.rate, self.opts, self.on_message = url, rate, opts, on_message
        protocol = m.PROTOCOL_V1_1 if opts.resume and opts.channels == 1 else m.PROTOCOL_VERSION
        start = m.Start(
            sample_rate=rate,
            encoding=opts.encoding,
            interim_results=opts.interim_results,
            protocol=protocol,
            vad_events=opts.vad_events,
            utterance_end_ms=opts.utterance_end_ms if opts.vad_events else None,
            hook=opts.hook,
            channels=opts.channels,
        )
        self.client = ClientProtocol(start)
        self.buffer = ReplayBuffer(rate, opts.replay_buffer_s)
        self.result = StreamResult()
        self.last_seq = -1
        self.captured = asyncio.Event()  # new audio, or capture finished
        self.caught_up = asyncio.Event()  # the sender has sent everything captured
        self.capture_done = False
        self.sent_to = 0  # sample index sent on the current connection
        self.keep_from: int | None = None  # while connected: audio from here must not be dropped
        self.reason = ""
        self.lost_at: float | None = None  # when the current outage began
        self.attempt = 0  # reconnect attempts in the current outage
        self.refused: m.Error | None = None  # the server's last refusal of the start (busy)

    def _emit(self, message: ServerMessage | ClientEvent) -> None:
        if self.on_message:
            self.on_message(message)

    async def run(self, source: AsyncIterator[np.ndarray]) -> StreamResult:
        self.result.started_at = time.monotonic()
        capture = asyncio.create_task(self._capture(source))
        try:
            await self._connections()
        finally:
            capture.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await capture
        self.result.finished_at = time.monotonic()
        return self.result

    async def _capture(self, source: AsyncIterator[np.ndarray]) -> None:
        """Capture into the replay buffer, whatever the connection is doing.  A source that is
        not real-time (a file sent as fast as possible) waits for the sender instead of
        running ahead of it."""
        async for chunk in source:
            while not self.opts.realtime and self.sent_to < self.buffer.end:
                self.caught_up.clear()
                await self.caught_up.wait()
            self.take(chunk)
        self.end_capture()

    def take(self, chunk: np.ndarray) -> None:
        """Capture ``chunk`` now: into the replay buffer, timestamped, and wake the sender."""
        self.buffer.append(chunk, self.keep_from)
        self.result.sent.append((self.buffer.end / self.rate, time.monotonic()))
        self.captured.set()

    def end_capture(self) -> None:
        self.capture_done = True
        self.captured.set()

    async def _connections(self) -> None:
        delay = self.opts.backoff_initial_s
        while True:
            try:
                outcome = await self._connect()
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as e:
                if self.result.session_id is None and not _told_busy(e):
                    raise  # the server was never reached: nothing to resume
                self.reason, outcome = f"{type(e).__name__}: {e}", _Outcome.RETRY
            started = self.result.session_id is not None
            # a start the server refused for now (busy: close 1013 or a retryable error) is
            # tried again, resumable or not: nothing was sent yet
            if outcome is _Outcome.DONE or (started and not self._resumable):
                return
            now = time.monotonic()
            if self.lost_at is None:  # a new outage
                self.lost_at, self.attempt, delay = now, 0, self.opts.backoff_initial_s
            elif now - self.lost_at > self.opts.reconnect_budget_s:
                if started:
                    self.result.error = m.Error(code="reconnect_failed", message=f"gave up: {self.reason}")
                else:  # the server's own refusal, typed, not an exception out of the SDK
                    self._record(
                        self.refused or m.Error(code="overloaded", message=f"gave up: {self.reason}")
                    )
                return
            self.attempt += 1
            self._emit(Reconnecting(self.attempt, self.reason))
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.opts.backoff_max_s)

    async def _connect(self) -> _Outcome:
        headers = {"Authorization": f"Bearer {self.opts.api_key}"} if self.opts.api_key else None
        async with connect(
            self.url, open_timeout=self.opts.open_timeout_s, max_size=2**24, additional_headers=headers
        ) as ws:
            if self.result.session_id is None:
                outcome = await self._start(ws)
            else:
                outcome = await self._resume(ws)
            if outcome is None:
                outcome = await self._stream(ws)
            if outcome is _Outcome.DONE:
                await ws.wait_closed()  # the server closes right after closed / error
        self.result.close_code = ws.close_code
        return outcome

    async def _stream(self, ws: ClientConnection) -> _Outcome:
        sender = asyncio.create_task(self._send(ws))
        try:
            return await self._receive(ws)
        finally:
            self.keep_from = None  # disconnected: the buffer may overflow again
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _start(self, ws: ClientConnection) -> _Outcome | None:
        # refused before the start was read: the server's reason may still wait below
        with contextlib.suppress(ConnectionClosed):
            await ws.send(self.client.start_message())
        async with asyncio.timeout(self.opts.open_timeout_s):
            ready = self.client.receive_text(str(await ws.recv()))
        if isinstance(ready, m.Error) and ready.code in RETRYABLE_ERRORS:
            self.reason, self.refused = f"{ready.code}: {ready.message}", ready
            return _Outcome.RETRY
        if not isinstance(ready, m.Ready):
            self._record(ready)
            return _Outcome.DONE
        self.refused, self.lost_at = None, None  # started: a refusal before it is no outage
        self.result.session_id = ready.session_id
        self._emit(ready)
        self.sent_to = self.keep_from = 0
        return None

    async def _resume(self, ws: ClientConnection) -> _Outcome | None:
        self.keep_from = self.buffer.base  # what the server may ask for stays until it answers
        await ws.send(self.client.resume_message(self.last_seq, audio_from=self.buffer.base / self.rate))
        # a replica that accepts the connection but never answers must not stall the resume
        # past reconnect_budget_s: a timeout here is retried like a failed connection
        async with asyncio.timeout(self.opts.open_timeout_s):
            answer = self.client.receive_text(str(await ws.recv()))
        if isinstance(answer, m.Error):
            if answer.code in RETRYABLE_ERRORS:
                self.reason = f"{answer.code}: {answer.message}"
                return _Outcome.RETRY
            self._record(answer)
            return _Outcome.DONE
        if not isinstance(answer, m.Resumed):
            raise ProtocolError(f"expected resumed, got {answer.type}")
        self._emit(answer)
        self.sent_to = self.keep_from = round(answer.audio_offset * self.rate)
        if answer.skipped_from is not None:  # the server skipped audio the buffer had dropped
            self._gap(answer.skipped_from, answer.audio_offset)
        resumed = SessionResumed(
            session_id=answer.session_id,
            attempt=self.attempt,
            disconnected_at=self.lost_at or time.monotonic(),
            resumed_at=time.monotonic(),
            audio_offset=answer.audio_offset,
            resent_s=(self.buffer.end - self.sent_to) / self.rate,
            missed_finals=answer.next_seq - 1 - self.last_seq,
            next_seq=answer.next_seq,
        )
        self.result.resumes.append(resumed)
        self._emit(resumed)
        return None

    def _gap(self, start_s: float, end_s: float) -> None:
        gap = AudioGap(start_s, end_s)
        self.result.gaps.append(gap)
        self._emit(gap)

    def _frame(self) -> int:
        return max(1, int(self.opts.chunk_s * self.rate))

    async def _send(self, ws: ClientConnection) -> None:
        """Send captured audio from ``sent_to`` on; ``close`` once capture ended and all is sent."""
        while True:
            if self.sent_to < self.buffer.end:
                stop = min(self.buffer.end, self.sent_to + self._frame())
                await ws.send(self._payload(self.sent_to, stop))
                self.sent_to = self.keep_from = stop
                continue
            self.caught_up.set()
            if self.capture_done:
                await ws.send(ClientProtocol.control(m.Close()))
                return
            else:
                self.captured.clear()
                await self.captured.wait()

    def _payload(self, start: int, stop: int) -> bytes:
        """The binary frame carrying captured samples ``[start, stop)``."""
        return encode_pcm(self.buffer.read(start, stop), self.opts.encoding)

    async def _receive(self, ws: ClientConnection) -> _Outcome:
        try:
            async for raw in ws:
                message = self.client.receive_text(str(raw))
                if isinstance(message, m.Reconnect):
                    self.reason = f"server: {message.reason}"
                    return _Outcome.RETRY
                if isinstance(message, m.Ack | m.Final):
                    self.lost_at = None  # progress: an outage, if any, is over
                if isinstance(message, m.Ack):
                    self.buffer.ack(round(message.audio_offset * self.rate))
                elif isinstance(message, m.Error) and message.code in RETRYABLE_ERRORS and self._resumable:
                    self.reason = f"{message.code}: {message.message}"
                    return _Outcome.RETRY
                self._record(message)
                if isinstance(message, m.Closed | m.Error):
                    return _Outcome.DONE
        except ConnectionClosed:
            pass
        self.reason = f"connection closed ({ws.close_code})"
        return _Outcome.RETRY

    @property
    def _resumable(self) -> bool:
        return self.opts.resume and self.client.resume_token is not None

    def _repeats(self, event: m.SpeechStarted | m.UtteranceEnd) -> bool:
        """Voice events alternate; after a resume the server's fresh VAD can announce again
        what the old connection already did (the utterance's start, or its end when the
        connection dropped just after it): the repeat is not handed to the caller."""
        voice = self.result.voice
        return bool(voice) and type(voice[-1][1]) is type(event)

    def _record(self, message: ServerMessage) -> None:
        # a resume's repeats (one stream; a multi-channel session is not resumable: each channel
        # numbers its finals and has its own voice events)
        resumable = getattr(message, "channel", None) is None
        if isinstance(message, m.Final) and resumable:
            if message.seq <= self.last_seq:
                return  # already handed to the caller
            self.last_seq = message.seq
        elif isinstance(message, m.SpeechStarted | m.UtteranceEnd) and resumable and self._repeats(message):
            return
        self.result.record(message, time.monotonic())
        self._emit(message)


def encode_frames(samples: np.ndarray, rate: int, opts: StreamOptions) -> list[bytes]:
    """The binary frames a stream of ``samples`` sends, encoded once: byte for byte what
    :class:`_Session` sends when each frame goes out as it is captured (the usual case)."""
    step = max(1, int(opts.chunk_s * rate))
    return [encode_pcm(samples[i : i + step], opts.encoding) for i in range(0, len(samples), step)]


async def paced(samples: np.ndarray, rate: int, opts: StreamOptions) -> AsyncIterator[np.ndarray]:
    """Yield ``samples`` in ``chunk_s`` frames, at real-time pace unless ``opts.realtime`` is off."""
    step = max(1, int(opts.chunk_s * rate))
    began = time.monotonic()
    for start in range(0, len(samples), step):
        if opts.realtime:
            delay = began + start / rate / opts.speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield samples[start : start + step]


async def stream_source(
    url: str,
    source: AsyncIterator[np.ndarray],
    sample_rate: int,
    options: StreamOptions | None = None,
    on_message: OnMessage | None = None,
) -> StreamResult:
    """Stream float32 mono chunks from any async source (a microphone, a pipe) until it ends."""
    return await _Session(url, sample_rate, options or StreamOptions(), on_message).run(source)


async def stream_audio(
    url: str,
    samples: np.ndarray,
    sample_rate: int,
    options: StreamOptions | None = None,
    on_message: OnMessage | None = None,
) -> StreamResult:
    """Stream float32 mono ``samples`` and return everything the server sent back."""
    opts = options or StreamOptions()
    return await stream_source(url, paced(samples, sample_rate, opts), sample_rate, opts, on_message)


async def stream_file(
    url: str, path: str | Path, options: StreamOptions | None = None, on_message: OnMessage | None = None
) -> StreamResult:
    wav = read_wav(path)
    return await stream_audio(url, wav.samples, wav.sample_rate, options, on_message)


Event = ServerMessage | ClientEvent


class LiveStream:
    """One live stream: push audio with :meth:`send` / :meth:`feed`, end it with :meth:`end`,
    consume events with ``async for``.  Resume after a dropped connection happens inside
    (protocol v1.1): the iterator shows it as :class:`Reconnecting` / :class:`SessionResumed`
    and never repeats a final.  Use it as an async context manager (:func:`open_stream`)."""

    def __init__(
        self,
        url: str,
        sample_rate: int,
        options: StreamOptions | None = None,
        input_encoding: m.Encoding = "pcm_s16le",
    ) -> None:
        self.input_encoding = input_encoding  # how bytes passed to send() are encoded
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()  # None: the stream ended
        self._session = _Session(url, sample_rate, options or StreamOptions(), self._events.put_nowait)
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._failure_raised = False  # raised once: by the iterator or by wait()

    @property
    def result(self) -> StreamResult:
        """Everything received so far; complete once the iterator has ended."""
        return self._session.result

    async def __aenter__(self) -> LiveStream:
        self._session.result.started_at = time.monotonic()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.end()
            await self.wait()
        elif self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            await self._session._connections()
        except Exception as e:  # re-raised to whoever iterates or waits
            self._failure = e
        finally:
            self._session.result.finished_at = time.monotonic()
            self._events.put_nowait(None)

    async def send(self, audio: np.ndarray | bytes) -> None:
        """Capture audio now: float32 mono samples, or bytes in ``input_encoding``.  With
        ``options.realtime`` off this waits until the socket has taken what came before."""
        samples = decode_pcm(audio, self.input_encoding) if isinstance(audio, bytes) else audio
        session = self._session
        while not session.opts.realtime and session.sent_to < session.buffer.end and not self.done:
            session.caught_up.clear()
            await session.caught_up.wait()
        session.take(samples)

    async def feed(self, source: AsyncIterator[np.ndarray | bytes]) -> None:
        """Send every chunk of ``source``, then end the stream."""
        async for chunk in source:
            await self.send(chunk)
        await self.end()

    async def end(self) -> None:
        """No more audio: the server commits the rest, sends ``closed`` and the iterator ends."""
        self._session.end_capture()

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def wait(self) -> StreamResult:
        """Wait for the stream to end; raise what stopped it if it never reached the server."""
        if self._task is not None:
            await asyncio.shield(self._task)
        self._raise_failure()
        return self.result

    def _raise_failure(self) -> None:
        if self._failure is not None and not self._failure_raised:
            self._failure_raised = True
            raise self._failure

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self._events.get()) is not None:
            yield event
        self._events.put_nowait(None)  # a second iterator ends too
        self._raise_failure()


def open_stream(
    url: str,
    sample_rate: int,
    options: StreamOptions | None = None,
    input_encoding: m.Encoding = "pcm_s16le",
) -> LiveStream:
    """A live stream to use with ``async with`` (see :class:`LiveStream`)."""
    return LiveStream(url, sample_rate, options, input_encoding)


__all__ = [
    "DEFAULT_URL",
    "AudioGap",
    "Event",
    "LiveStream",
    "ProtocolError",
    "RayscribeError",
    "Reconnecting",
    "SessionResumed",
    "StreamOptions",
    "StreamResult",
    "encode_frames",
    "open_stream",
    "paced",
    "stream_audio",
    "stream_file",
    "stream_source",
]
