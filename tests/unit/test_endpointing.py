"""Voice activity in the streaming policy: gating, endpoints, silence trimming, stalled tails;
and the Silero VAD itself on real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deployments.streaming import LocalAgreement, PolicyConfig
from deployments.transcript import Hypothesis, Word
from deployments.vad import CHUNK, CHUNK_S, StreamVad, VadConfig, VoiceTracker
from ingest.audio import read_wav

SR = 16000
SAMPLE = Path(__file__).resolve().parents[2] / "ingest" / "samples" / "jfk.wav"
SPEECH, SILENCE = 0.9, 0.05


def policy(**kw: float) -> LocalAgreement:
    la = LocalAgreement(PolicyConfig(step_s=1.0, **kw))  # type: ignore[arg-type]
    la.voice = VoiceTracker(la.config.vad)
    return la


def feed(la: LocalAgreement, seconds: float, prob: float) -> None:
    """``seconds`` of audio that the VAD scores ``prob`` throughout."""
    n = int(round(seconds / CHUNK_S))
    la.add_audio(np.zeros(n * CHUNK, dtype=np.float32))
    la.add_voice([prob] * n)


def words(spec: str, start: float, dur: float = 0.3) -> list[Word]:
    return [Word(" " + w, start + i * dur, start + (i + 1) * dur) for i, w in enumerate(spec.split())]


def test_tracker_hysteresis_keeps_quiet_word_endings_as_speech() -> None:
    t = VoiceTracker(VadConfig(threshold=0.5, neg_threshold=0.3))
    t.feed([0.1, 0.2, 0.4])  # below the start threshold: still silence
    assert not t.speaking and t.voice_start is None
    t.feed([0.6, 0.4, 0.35])  # starts at 0.6, stays on above 0.3
    assert t.speaking and t.voice_start == 3 * CHUNK_S and t.voice_end == 6 * CHUNK_S
    t.feed([0.2, 0.1])
    assert not t.speaking and abs(t.silence_s(t.end) - 2 * CHUNK_S) < 1e-9


def test_no_decode_while_silent_and_silence_is_dropped() -> None:
    la = policy(keep_silence_s=1.0)
    feed(la, 5.0, SILENCE)
    assert not la.ready() and not la.endpointed()
    assert la._buffer_s() <= 1.0 + CHUNK_S  # only the silence in front of what comes next
    assert la.buffer_offset > 3.9  # stream time still counts the dropped audio
    feed(la, 1.0, SPEECH)
    assert la.ready()


def test_endpoint_after_silence_commits_the_whole_utterance() -> None:
    la = policy(endpoint_silence_s=0.6)
    feed(la, 1.6, SPEECH)
    assert la.ready() and not la.endpointed()
    la.apply(la_hyp := Hypothesis(words("hello there", la.buffer_offset)))
    assert la.committed == [] and la_hyp.words  # one hypothesis: nothing agreed yet
    feed(la, 0.3, SILENCE)
    assert not la.endpointed()  # a short pause is not the end
    feed(la, 0.4, SILENCE)
    assert la.endpointed()
    request = la.request()
    update = la.flush(Hypothesis(words("hello there friend", request.offset)))
    assert [w.text for w in update.committed] == [" hello", " there", " friend"]
    assert not la.endpointed() and len(la.buffer) == 0


def test_endpoint_flush_keeps_audio_that_arrived_during_the_decode() -> None:
    la = policy()
    feed(la, 1.0, SPEECH)
    feed(la, 0.7, SILENCE)
    assert la.endpointed()
    request = la.request()
    end = request.offset + len(request.audio) / SR
    feed(la, 0.5, SPEECH)  # the next utterance starts while the endpoint decode runs
    la.flush(Hypothesis(words("one two", request.offset)))
    assert abs(la.buffer_offset - end) < 1e-3 and abs(la._buffer_s() - 16 * CHUNK_S) < 1e-3
    assert la.endpointed() is False and la._utterance_open  # the new speech is still to decode


def test_stalled_forced_decode_is_retried_only_when_speech_follows() -> None:
    la = policy()
    feed(la, 2.0, SPEECH)
    la.apply(Hypothesis(words("warm and thou", 0.0)))
    la.apply(Hypothesis(words("warm and thou", 0.0)))  # committed, ends at 0.9 s
    feed(la, 0.5, SILENCE)
    request = la.request()
    assert request.forced.strip() == "warm and thou"
    only_forced = Hypothesis(words("warm and thou", 0.0))
    assert la.stalled(only_forced)  # 1.1 s of speech after the committed words
    assert not la.stalled(Hypothesis(words("warm and thou feel'st", 0.0)))
    retry = la.request(min_tokens=1, final=True)
    assert retry.min_tokens == 1 and retry.forced == request.forced
    assert retry.full_window and not request.full_window  # only a flush's decode: full input


def test_stalled_is_false_when_only_silence_follows() -> None:
    la = policy()
    feed(la, 0.4, SPEECH)
    la.apply(Hypothesis(words("yes", 0.0)))
    la.apply(Hypothesis(words("yes", 0.0)))
    feed(la, 2.0, SILENCE)
    la.request()
    assert not la.stalled(Hypothesis(words("yes", 0.0)))


def test_silero_finds_the_speech_in_a_real_recording() -> None:
    speech = read_wav(SAMPLE).samples
    audio = np.concatenate([np.zeros(SR * 2, dtype=np.float32), speech, np.zeros(SR * 2, dtype=np.float32)])
    vad, tracker = StreamVad(), VoiceTracker(VadConfig())
    for i in range(0, len(audio), 1600):  # 100 ms frames, not chunk-aligned
        tracker.feed(vad.process(audio[i : i + 1600]))
    assert tracker.end == (len(audio) // CHUNK) * CHUNK_S
    speech_end = 2.0 + len(speech) / SR
    assert tracker.voice_start is not None
    # the last stretch of speech ends with the recording, and silence follows
    assert speech_end - 1.5 < tracker.voice_end <= speech_end + 0.3
    assert not tracker.speaking and tracker.silence_s(tracker.end) > 1.5
    first = VoiceTracker(VadConfig())
    vad2 = StreamVad()
    first.feed(vad2.process(audio[: SR * 2]))
    assert first.voice_start is None  # the leading silence is silence


def test_no_endpoint_after_a_resume_until_speech_is_heard() -> None:
    la = policy()
    la.restore(12.0, [], [])
    feed(la, 1.0, SILENCE)  # the fresh VAD has not recognised the resent speech yet
    assert not la.endpointed() and not la.ready()
    feed(la, 1.0, SPEECH)
    assert la.ready() and la.voice is not None and la.voice.voice_end > 12.0
    feed(la, 0.7, SILENCE)
    assert la.endpointed()
    request = la.request()
    assert request.offset == 12.0 and abs(len(request.audio) / SR - 2.7) < 0.1  # nothing lost


def test_a_flush_that_stops_short_of_the_speech_keeps_the_rest() -> None:
    la = policy()
    feed(la, 6.0, SPEECH)
    feed(la, 0.7, SILENCE)
    assert la.endpointed()
    request = la.request()
    # the decode skipped most of the window: its last word ends at 0.9 s, speech at 6 s
    update = la.flush(Hypothesis(words("so it began", request.offset)))
    assert [w.text for w in update.committed] == [" so", " it", " began"]
    assert abs(la.buffer_offset - 0.9) < 1e-3 and la.uncovered()  # the rest is decoded again
    again = la.request()
    done = la.flush(Hypothesis(words("and went on and on", again.offset, dur=1.0)))
    assert len(done.committed) == 5 and not la.uncovered() and len(la.buffer) == 0
