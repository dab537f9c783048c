"""Voice-activity events from the real Silero VAD on a real recording with pauses: one
speech_started near the start of each utterance, one utterance_end in each pause, none
mid-word (Whisper's word timings say where the words are)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.vad import SpeechStart, StreamVad, UtteranceStop, VadConfig, VoiceEvents
from tests.pauses import PausedRecording, paused_recording

pytestmark = pytest.mark.model
FRAME = 1600  # 100 ms frames, as the SDK sends them


@pytest.fixture(scope="module")
def recording(evalset: Path) -> PausedRecording:
    return paused_recording(evalset)


def events_of(recording: PausedRecording, utterance_end_s: float) -> list[SpeechStart | UtteranceStop]:
    vad, events = StreamVad(), VoiceEvents.create(VadConfig(), utterance_end_s)
    samples = recording.samples
    return [
        e for i in range(0, len(samples), FRAME) for e in events.feed(vad.process(samples[i : i + FRAME]))
    ]


@pytest.mark.parametrize("utterance_end_s", [0.5, 1.0])
def test_events_mark_each_utterance_and_fall_in_the_pauses(
    recording: PausedRecording, utterance_end_s: float
) -> None:
    events = events_of(recording, utterance_end_s)
    utterances = recording.utterances
    assert [type(e) for e in events] == [SpeechStart, UtteranceStop] * len(utterances)
    for u, start, stop in zip(utterances, events[::2], events[1::2], strict=True):
        assert isinstance(start, SpeechStart) and isinstance(stop, UtteranceStop)
        first, last = u.words[0], u.words[-1]
        # speech starts inside the clip, before its first word is over (a first word's DTW
        # start is often stretched back over the clip's leading silence)
        assert u.start <= start.timestamp <= max(first.start + 0.2, first.end - 0.1), (start, first)
        # the utterance's speech ends after its last word and inside the clip
        assert last.end - 0.2 <= stop.voice_end <= u.end, (stop, last)
        # utterance_end is decided in the pause: after the last word, before the next clip
        assert last.end < stop.at < u.end + 1.5
        assert recording.mid_word(stop.at) is None, (stop, recording.mid_word(stop.at))
        # no earlier word goes on past the speech end (the last word's DTW end is often
        # stretched to the clip's end: the check above bounds it)
        assert recording.mid_word(stop.voice_end) in (None, last), (stop, recording.mid_word(stop.voice_end))


def test_a_long_utterance_end_waits_out_the_pauses(recording: PausedRecording) -> None:
    """utterance_end_ms beyond the 1.5 s pauses: the whole recording is one utterance (whose
    end would come after the recording's last 1.5 s of silence)."""
    events = events_of(recording, 2.0)
    assert [type(e) for e in events] == [SpeechStart]
