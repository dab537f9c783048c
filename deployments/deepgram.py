"""Deepgram-compatible live endpoint (``/v1/listen``): a thin adapter onto :class:`StreamSession`.

Nothing here transcribes.  :class:`DeepgramTransport` sits between the socket and the same
``StreamSession`` that serves ``/v1/stream``: it turns the query string into a protocol v1.1
``start`` (so finals are persisted and limits apply exactly as there), Deepgram's client
messages into ours, and our server messages into Deepgram's (:class:`Translator`, sans-I/O).

Mapping (docs/deepgram.md has the full compatibility table):

- ``partial``  -> ``Results`` is_final=false (words spread evenly: partials carry no timings)
- ``final``    -> ``Results`` is_final=true; speech_final=true when nothing uncommitted follows
  it (the next partial is empty), after ``Finalize`` (from_finalize=true) and at the end
- ``flushed``  -> releases the finalized result (an empty one if nothing was left to commit)
- ``closed``   -> ``Metadata``; ``error`` -> ``Error`` (then the session's close code)
- ``ready``, ``ack``, ``resumed``, ``reconnect``: nothing (Deepgram clients do not resume)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from deployments.session import Transport
from ingest import deepgram_messages as dg
from ingest import messages as m
from ingest.errors import ProtocolError, UnsupportedAudio

LISTEN_PATH = "/v1/listen"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
# accepted and ignored: they change nothing a client can rely on here (docs/deepgram.md)
_IGNORED = {"punctuate", "smart_format", "endpointing", "model", "version", "tier", "tag", "mip_opt_out"}
_IGNORED |= {"extra", "filler_words"}
# accepted only when off: a true value asks for a feature rayscribe does not have
_OFF_ONLY = {"numerals", "profanity_filter", "dictation", "diarize", "multichannel", "detect_entities"}
_HANDLED = {"encoding", "sample_rate", "channels", "interim_results", "utterance_end_ms", "vad_events"}
_HANDLED |= {"language"}
_LANGUAGES = ("en", "en-us", "en-gb", "en-au", "en-in", "en-nz")


@dataclass(frozen=True)
class ListenOptions:
    sample_rate: int
    interim_results: bool = False  # Deepgram's default
    utterance_end_ms: int | None = None
    vad_events: bool = False

    def start(self) -> m.Start:
        # partials always on: the adapter needs them for speech_final even when the client
        # asked for finals only (it drops them then)
        return m.Start(sample_rate=self.sample_rate, interim_results=True, protocol=m.PROTOCOL_V1_1)


def parse_options(query: Mapping[str, str]) -> ListenOptions:
    """Deepgram's query parameters -> options; anything unsupported raises with the reason."""
    for key, value in query.items():
        if key in _OFF_ONLY and _flag(key, value):
            raise ProtocolError(f"{key}=true is not supported by rayscribe (docs/deepgram.md)")
        if key not in _HANDLED | _IGNORED | _OFF_ONLY:
            raise ProtocolError(f"query parameter {key!r} is not supported by rayscribe (docs/deepgram.md)")
    encoding = query.get("encoding")
    if encoding != "linear16":
        raise UnsupportedAudio(
            f"encoding={encoding or '(none)'} is not supported: send raw encoding=linear16 with sample_rate"
        )
    rate = _int("sample_rate", query.get("sample_rate"))
    if rate is None or not 8000 <= rate <= 48000:
        raise UnsupportedAudio("sample_rate is required with linear16 and must be 8000..48000")
    channels = _int("channels", query.get("channels", "1"))
    if channels != 1:
        raise UnsupportedAudio(f"channels={channels} is not supported: send mono audio (channels=1)")
    language = query.get("language", "en").lower()
    if language not in _LANGUAGES:
        raise ProtocolError(f"language={language} is not supported: rayscribe's model is English only")
    utterance_end = _int("utterance_end_ms", query.get("utterance_end_ms"))
    if utterance_end is not None and utterance_end < 1000:
        raise ProtocolError("utterance_end_ms must be at least 1000")
    return ListenOptions(
        sample_rate=rate,
        interim_results=_flag("interim_results", query.get("interim_results", "false")),
        utterance_end_ms=utterance_end,
        vad_events=_flag("vad_events", query.get("vad_events", "false")),
    )


def _flag(key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ProtocolError(f"{key}={value} is not a boolean (true or false)")


def _int(key: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ProtocolError(f"{key}={value} is not an integer") from None


def client_message(text: str) -> str:
    """A Deepgram client text message -> ours (unknown ones pass on and fail there, typed)."""
    try:
        kind = json.loads(text).get("type")
    except (json.JSONDecodeError, AttributeError):
        return text
    ours = {"KeepAlive": m.KeepAlive(), "Finalize": m.Finalize(), "CloseStream": m.Close()}.get(kind)
    return ours.model_dump_json() if ours is not None else text


def error_message(code: str, description: str) -> str:
    return dg.Error(variant=code, description=description).model_dump_json()


class Translator:
    """Our server messages -> Deepgram's, for one stream (sans-I/O: text in, texts out)."""

    def __init__(self, options: ListenOptions) -> None:
        self.options = options
        self.request_id = ""
        self.cursor = 0.0  # end of the last final: where the next result starts
        self.held: m.Final | None = None  # a final waits for the next message (speech_final)
        self.finalizing = False  # the client sent Finalize; its flush has not answered yet
        self.in_speech = False  # words are pending since the last endpoint
        self.last_word_end: float | None = None  # for UtteranceEnd; None once reported

    def finalize_requested(self) -> None:
        self.finalizing = True

    def translate(self, text: str) -> list[str]:
        try:
            message = m.SERVER_MESSAGE.validate_json(text)
        except ValidationError:
            return []
        out: list[dg.DeepgramMessage] = []
        if isinstance(message, m.Ready | m.Resumed):
            self.request_id = message.session_id
        elif isinstance(message, m.Final):
            out += self._release(speech_final=False)
            self.held = message
        elif isinstance(message, m.Partial):
            out += self._partial(message)
        elif isinstance(message, m.Flushed):
            out += self._release(speech_final=True, finalize=True) or [self._empty_final(message.audio_end)]
            self.finalizing = False
        elif isinstance(message, m.Closed):
            out += self._release(speech_final=True)
            created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            duration = message.summary.audio_seconds
            out.append(dg.Metadata(request_id=self.request_id, created=created, duration=duration))
        elif isinstance(message, m.Error):
            out += self._release(speech_final=True)
            out.append(dg.Error(variant=message.code, description=message.message))
        return [x.model_dump_json() for x in out]

    def _partial(self, partial: m.Partial) -> list[dg.DeepgramMessage]:
        out = self._release(speech_final=not partial.text)
        if partial.text:
            if not self.in_speech and self.options.vad_events:
                out.append(dg.SpeechStarted(timestamp=partial.start))
            self.in_speech = True
            if self.options.interim_results:
                words = _spread(partial.text.split(), partial.start, partial.end)
                out.append(self._results(partial.text, words, partial.audio_end, is_final=False))
        elif self._utterance_ended(partial.audio_end) and self.last_word_end is not None:
            out.append(dg.UtteranceEnd(last_word_end=self.last_word_end))
            self.last_word_end = None
        return out

    def _utterance_ended(self, audio_end: float) -> bool:
        limit = self.options.utterance_end_ms
        end = self.last_word_end
        return limit is not None and end is not None and audio_end - end >= limit / 1000

    def _release(self, speech_final: bool, finalize: bool = False) -> list[dg.DeepgramMessage]:
        final, self.held = self.held, None
        if final is None:
            return []
        words = [
            dg.Word(
                word=_bare(w.word),
                start=w.start,
                end=w.end,
                confidence=w.probability,
                punctuated_word=w.word,
            )
            for w in final.words
        ]
        result = self._results(
            final.text, words, final.end, is_final=True, speech_final=speech_final, finalize=finalize
        )
        self.cursor = max(self.cursor, final.end)
        self.last_word_end = final.end
        if speech_final:
            self.in_speech = False
        return [result]

    def _empty_final(self, audio_end: float) -> dg.Results:
        result = self._results("", [], audio_end, is_final=True, speech_final=True, finalize=True)
        self.cursor = max(self.cursor, audio_end)
        return result

    def _results(
        self,
        transcript: str,
        words: list[dg.Word],
        end: float,
        is_final: bool,
        speech_final: bool = False,
        finalize: bool = False,
    ) -> dg.Results:
        confidence = round(sum(w.confidence for w in words) / len(words), 4) if words else 0.0
        alternative = dg.Alternative(transcript=transcript, confidence=confidence, words=words)
        return dg.Results(
            start=round(self.cursor, 3),
            duration=round(max(0.0, end - self.cursor), 3),
            is_final=is_final,
            speech_final=speech_final,
            from_finalize=finalize and self.finalizing,
            channel=dg.Channel(alternatives=[alternative]),
            metadata=dg.ResultsMetadata(request_id=self.request_id, model_info=dg.ModelInfo(**dg.MODEL_INFO)),
        )


def _bare(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum() or c == "'")


def _spread(tokens: list[str], start: float, end: float) -> list[dg.Word]:
    """Words of a partial with times spread evenly over its span (partials carry no timings)."""
    step = (end - start) / max(1, len(tokens))
    return [
        dg.Word(
            word=_bare(t),
            start=round(start + i * step, 3),
            end=round(start + (i + 1) * step, 3),
            confidence=0.0,
            punctuated_word=t,
        )
        for i, t in enumerate(tokens)
    ]


class DeepgramTransport:
    """The session's :class:`Transport` for a Deepgram client: ``start`` from the query
    string first, then the client's frames translated in, our messages translated out."""

    def __init__(self, inner: Transport, options: ListenOptions) -> None:
        self.inner = inner
        self.translator = Translator(options)
        self._start: str | None = options.start().model_dump_json()

    async def receive(self) -> str | bytes | None:
        if self._start is not None:
            start, self._start = self._start, None
            return start
        data = await self.inner.receive()
        if isinstance(data, str):
            data = client_message(data)
            if data == m.Finalize().model_dump_json():
                self.translator.finalize_requested()
        return data

    async def send_text(self, text: str) -> None:
        for out in self.translator.translate(text):
            await self.inner.send_text(out)

    async def close(self, code: int) -> None:
        await self.inner.close(code)
