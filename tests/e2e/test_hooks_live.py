"""Utterance hooks end to end (issue 10): spoken commands streamed over a real WebSocket to
the served app; each utterance reaches the example intent handler (a Serve deployment of
the same app) and its answer comes back as hook_result, in order, before `closed`."""

from __future__ import annotations

import asyncio

import pytest

from ingest import messages as m
from ingest.client import StreamOptions, stream_audio
from tests.speech import spoken

pytestmark = pytest.mark.e2e

COMMANDS = ["Turn on the kitchen lights.", "What is the weather in Paris?", "Set a timer for five minutes."]


def test_each_spoken_command_comes_back_as_an_intent(server_url: str) -> None:
    speech = spoken(COMMANDS)
    heard: list[object] = []
    options = StreamOptions(speed=2.0, vad_events=True, hook="intents", interim_results=False)
    result = asyncio.run(stream_audio(server_url, speech.samples, 16000, options, heard.append))
    assert result.error is None and result.close_code == 1000
    answers = [x for x in result.hooks if isinstance(x, m.HookResult)]
    assert [x for x in result.hooks if isinstance(x, m.HookError)] == []
    assert [(a.result["intent"], a.result["slots"]) for a in answers] == [
        ("lights_on", {"room": "kitchen"}),
        ("weather", {"place": "paris"}),
        ("set_timer", {"amount": "5", "unit": "minute"}),
    ]
    # each answer is about one utterance: the finals it covers, in order, none twice
    seqs = [f.seq for f in result.finals]
    covered = [s for a in answers for s in range(a.utterance.seq_from, a.utterance.seq_to + 1)]
    assert covered == seqs
    previous_end = 0.0
    for a, (_, end) in zip(answers, speech.spans, strict=True):
        finals = [f for f in result.finals if a.utterance.seq_from <= f.seq <= a.utterance.seq_to]
        assert a.utterance.text == " ".join(f.text for f in finals)
        # (a first word's DTW start may stretch back over the pause, not into the last command)
        assert previous_end <= a.utterance.start and a.utterance.end <= end + 1.0
        previous_end = end
    # answers arrive after their utterance ends, and all before `closed`
    kinds = [type(x).__name__ for x in heard]
    assert kinds.index("HookResult") > kinds.index("UtteranceEnd") and kinds[-1] == "Closed"


def test_an_unknown_hook_is_refused(server_url: str) -> None:
    options = StreamOptions(vad_events=True, hook="billing", resume=False)
    result = asyncio.run(stream_audio(server_url, spoken(["Stop."]).samples, 16000, options))
    assert result.error is not None and result.error.code == "unknown_hook"
    assert result.close_code == 4422 and result.finals == []
