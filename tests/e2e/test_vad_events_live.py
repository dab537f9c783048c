"""Voice-activity events end to end: the paused recording (tests/pauses.py) streamed over a
real WebSocket to the served app (whose decode policy runs no VAD): each utterance opens with
speech_started, its finals follow, the last with speech_final, then utterance_end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest import messages as m
from ingest.client import ClientEvent, StreamOptions, stream_audio
from ingest.wer import normalize
from tests.pauses import paused_recording

pytestmark = pytest.mark.e2e


def test_voice_events_frame_each_utterance(server_url: str, evalset: Path) -> None:
    recording = paused_recording(evalset)
    heard: list[m.AnyServerMessage | ClientEvent] = []
    options = StreamOptions(speed=2.0, vad_events=True, interim_results=False)
    result = asyncio.run(stream_audio(server_url, recording.samples, 16000, options, heard.append))
    assert result.error is None and result.close_code == 1000
    events = [x for x in heard if isinstance(x, m.SpeechStarted | m.UtteranceEnd | m.Final)]
    kinds = [type(x) for x in events if not isinstance(x, m.Final)]
    assert kinds == [m.SpeechStarted, m.UtteranceEnd] * len(recording.utterances)
    assert [v for _, v in result.voice] == [x for x in events if not isinstance(x, m.Final)]

    ends = [i for i, x in enumerate(events) if isinstance(x, m.UtteranceEnd)]
    begins = [i for i, x in enumerate(events) if isinstance(x, m.SpeechStarted)]
    previous_end = 0.0
    for u, begin, end in zip(recording.utterances, begins, ends, strict=True):
        started, closing, ended = events[begin], events[end - 1], events[end]
        assert isinstance(started, m.SpeechStarted) and isinstance(ended, m.UtteranceEnd)
        first, last = u.words[0], u.words[-1]
        assert u.start <= started.timestamp <= max(first.start + 0.2, first.end - 0.1)
        # the utterance's finals come between its events; the last one closes it
        assert isinstance(closing, m.Final) and closing.speech_final is True
        finals = [x for x in events[begin:end] if isinstance(x, m.Final)]
        assert all(f.speech_final is False for f in finals[:-1])
        assert normalize(finals[-1].words[-1].word) == normalize(last.text)
        # (a first word's DTW start may stretch back over the pause, not past the last utterance)
        # and the last word's end may stretch into the pause (the flush decoded it), not past it
        assert previous_end <= finals[0].start and finals[-1].end <= u.end + 1.0
        # utterance_end's last_word_end is held to the speech end
        assert last.end - 0.3 <= ended.last_word_end <= u.end + 0.1
        previous_end = ended.last_word_end
    assert sum(1 for x in events if isinstance(x, m.Final) and x.speech_final) == len(recording.utterances)
