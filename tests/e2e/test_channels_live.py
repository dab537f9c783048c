"""Multi-channel sessions end to end (issue 10): a 2-channel recording made from two evalset
clips (two speakers) streamed over a real WebSocket to the served app, each channel
transcribed on its own: each meets the streaming WER bound, nothing crosses channels, and
the merged transcript holds every final once, in time order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ingest import messages as m
from ingest.audio import read_wav
from ingest.client import StreamOptions, stream_audio
from ingest.wer import normalize, wer
from tests.e2e.clips import clip_by_id

pytestmark = pytest.mark.e2e
CLIPS = ("ljspeech-LJ001-0001", "ls-dev-clean-2412-153948-0000")  # a woman, a man


def test_two_speakers_on_two_channels_stay_apart(server_url: str, evalset: Path) -> None:
    clips = [clip_by_id(evalset, c) for c in CLIPS]
    audio = [read_wav(c.path).samples for c in clips]
    frames = max(len(a) for a in audio)
    stereo = np.zeros((frames, 2), dtype=np.float32)
    stereo[: len(audio[0]), 0] = audio[0]
    stereo[: len(audio[1]), 1] = audio[1]
    heard: list[object] = []
    options = StreamOptions(speed=2.0, channels=2, interim_results=True)
    result = asyncio.run(stream_audio(server_url, stereo, 16000, options, heard.append))
    assert result.error is None and result.close_code == 1000
    ready = next(x for x in heard if isinstance(x, m.Ready))
    assert ready.channels == 2 and ready.resume_token is None  # v1: not resumable yet
    assert all(f.channel in (0, 1) for f in result.finals)
    assert all(p.channel in (0, 1) for _, p in result.partials)
    said = [" ".join(f.text for f in result.finals if f.channel == c) for c in (0, 1)]
    for c, (clip, text) in enumerate(zip(clips, said, strict=True)):
        finals = [(f.start, f.end, f.text) for f in result.finals if f.channel == c]
        assert wer([clip.text], [text]) <= clip.bound, (finals, clip.offline_wer)
    # nothing crosses: a word only the other speaker says never shows up on this channel
    refs = [set(normalize(c.text)) for c in clips]
    for c in (0, 1):
        theirs = refs[1 - c] - refs[c]
        assert not theirs & set(normalize(said[c])), said[c]
    assert result.transcript is not None
    segments = result.transcript.segments
    assert sorted((s.channel, s.seq) for s in segments) == sorted(
        (f.channel or 0, f.seq) for f in result.finals
    )
    assert [s.start for s in segments] == sorted(s.start for s in segments)
    assert result.summary is not None and result.summary.words == sum(len(f.words) for f in result.finals)
