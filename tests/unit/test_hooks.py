"""Utterance hooks (issue 10): each completed utterance goes to the session's handler, its
answers come back in order as hook_result; a failing, slow or unknown handler is a typed
error (hook_error, or unknown_hook 4422 at start) and never ends or stalls the transcript."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from deployments import session as session_module
from deployments.hooks import Hooks, HooksConfig, SessionHook, load_handler
from deployments.intents import IntentHandler, match_intent
from ingest import messages as m
from ingest.audio import encode_pcm
from ingest.errors import ConfigError, ProtocolError
from ingest.protocol import ServerProtocol
from tests.unit.test_session import NO_VAD, ScriptedSocket, counting_decoder
from tests.unit.test_vad_events import CLOSE, SR, fake_vad, speech_and_pauses  # noqa: F401

START_HOOK = json.dumps({"type": "start", "sample_rate": SR, "vad_events": True, "hook": "intents"})


class Recorder:
    """A handler: answers each utterance with its text (after ``delay_s``), or fails."""

    def __init__(self, delay_s: float = 0.0, reply: object = None, error: Exception | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        self.delay_s, self.reply, self.error = delay_s, reply, error
        self.called: asyncio.Event | None = None

    async def __call__(self, name: str, utterance: dict[str, Any]) -> object:
        self.seen.append(utterance)
        if self.called is not None:
            self.called.set()
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return self.reply if self.reply is not None else {"heard": utterance["text"], "by": name}


def hooks(call: Recorder, **config: Any) -> Hooks:
    return Hooks(HooksConfig(handlers={"intents": "deployments.intents:IntentHandler"}, **config), call)


def run_session(start: str, hook_set: Hooks | None) -> tuple[ScriptedSocket, session_module.StreamSession]:
    pcm = encode_pcm(speech_and_pauses(), "pcm_s16le")
    step = int(0.1 * SR) * 2
    sock = ScriptedSocket([start, *(pcm[i : i + step] for i in range(0, len(pcm), step)), CLOSE])
    policy = session_module.PolicyConfig(step_s=1.0, vad=NO_VAD)
    session = session_module.StreamSession(
        "s1", sock, counting_decoder, policy, session_module.Limits(), hooks=hook_set
    )
    asyncio.run(session.run())
    return sock, session


@pytest.mark.usefixtures("fake_vad")
def test_each_utterance_reaches_the_hook_and_its_answer_the_client() -> None:
    call = Recorder(delay_s=0.05)
    sock, session = run_session(START_HOOK, hooks(call))
    kinds = [x["type"] for x in sock.sent]
    results = [m.HookResult.model_validate(x) for x in sock.sent if x["type"] == "hook_result"]
    assert len(results) == len(call.seen) == 2  # the recording's two utterances
    finals = [m.Final.model_validate(x) for x in sock.sent if x["type"] == "final"]
    ends = [i for i, f in enumerate(finals) if f.speech_final]
    first, second = finals[: ends[0] + 1], finals[ends[0] + 1 :]
    for result, utterance_finals in zip(results, (first, second), strict=True):
        u = result.utterance
        assert (u.seq_from, u.seq_to) == (utterance_finals[0].seq, utterance_finals[-1].seq)
        assert u.text == " ".join(f.text for f in utterance_finals) == result.result["heard"]
        assert result.hook == "intents" and result.result["by"] == "intents" and u.session_id == "s1"
    # each answer follows its utterance's end; the last comes before `closed`
    assert kinds.index("hook_result") > kinds.index("utterance_end")
    assert kinds[-2:] == ["hook_result", "closed"] and sock.close_code == 1000
    assert session.hook is not None and session.hook.task.done()


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (Recorder(error=RuntimeError("model crashed")), "hook_failed"),
        (Recorder(reply=["not", "an", "object"]), "hook_failed"),
        (Recorder(reply={"big": "x" * 5000}), "hook_failed"),
        (Recorder(delay_s=5.0), "hook_timeout"),
    ],
)
@pytest.mark.usefixtures("fake_vad")
def test_a_failing_hook_is_a_typed_error_and_the_stream_goes_on(call: Recorder, code: str) -> None:
    sock, _ = run_session(START_HOOK, hooks(call, timeout_s=0.2, max_reply_bytes=4096))
    errors = [m.HookError.model_validate(x) for x in sock.sent if x["type"] == "hook_error"]
    assert [e.code for e in errors] == [code, code]
    assert all(e.hook == "intents" and e.utterance.text for e in errors)
    assert not [x for x in sock.sent if x["type"] == "hook_result"]
    assert sum(1 for x in sock.sent if x["type"] == "final") >= 2 and sock.close_code == 1000


@pytest.mark.usefixtures("fake_vad")
def test_an_unknown_hook_is_refused_at_start() -> None:
    for offered in (hooks(Recorder()), None):
        start = START_HOOK.replace('"intents"', '"billing"')
        sock, _ = run_session(start, offered)
        assert [x["type"] for x in sock.sent] == ["error"]
        assert sock.sent[0]["code"] == "unknown_hook" and sock.close_code == 4422


def test_hook_needs_vad_events_and_a_valid_name() -> None:
    for fields in (
        {"hook": "intents"},
        {"vad_events": True, "hook": "../etc"},
        {"vad_events": True, "hook": ""},
    ):
        server = ServerProtocol()
        server.receive_text(json.dumps({"type": "start", "sample_rate": SR, **fields}))
        assert server.close_code == ProtocolError.close_code
        assert json.loads(server.data_to_send()[-1])["code"] == "protocol_error"
    plain = m.Start(sample_rate=SR, vad_events=True)
    assert "hook" not in plain.to_json()  # an older server still accepts it


def test_a_handler_behind_the_speaker_gets_a_bounded_queue() -> None:
    async def main() -> list[m.HookResult | m.HookError]:
        sent: list[m.HookResult | m.HookError] = []

        async def send(msg: m.HookResult | m.HookError) -> None:
            sent.append(msg)

        slow = Recorder(delay_s=0.05)
        slow.called = asyncio.Event()
        hook = SessionHook(hooks(slow, max_waiting=2), "intents", send)
        for i in range(5):
            u = m.Utterance(session_id="s", seq_from=i, seq_to=i, text=f"u{i}", start=i, end=i + 1)
            await hook.submit(u)
            if i == 0:
                await slow.called.wait()  # the handler took the first one
        await hook.finish()
        return sent

    sent = asyncio.run(main())
    # the first is taken at once, two wait, the other two are refused at once: nothing hangs
    assert sorted(type(x).__name__ for x in sent) == ["HookError"] * 2 + ["HookResult"] * 3
    answered = [x.utterance.seq_from for x in sent if isinstance(x, m.HookResult)]
    assert answered == sorted(answered)  # in utterance order


def test_handler_paths_load_or_fail_typed() -> None:
    assert load_handler("deployments.intents:IntentHandler") is IntentHandler
    for bad in ("deployments.intents:Nope", "no.such.module:X", "nocolon"):
        with pytest.raises(ConfigError):
            load_handler(bad)
    from deployments.app import compose

    with pytest.raises(ConfigError, match="not a Serve deployment"):  # a function, not a deployment
        compose({"ingress": {"hooks": {"handlers": {"x": "deployments.intents:match_intent"}}}})


@pytest.mark.parametrize(
    ("text", "intent", "slots"),
    [
        ("Turn on the kitchen lights.", "lights_on", {"room": "kitchen"}),
        ("Please switch the lights off", "lights_off", {}),
        ("Set a timer for five minutes!", "set_timer", {"amount": "5", "unit": "minute"}),
        ("What's the weather like in New York?", "weather", {"place": "new york"}),
        ("What time is it?", "time", {}),
        ("Stop.", "stop", {}),
        ("The narrative would be tedious to him.", "none", {}),
    ],
)
def test_example_intents(text: str, intent: str, slots: dict[str, str]) -> None:
    found = match_intent(text)
    assert (found["intent"], found["slots"]) == (intent, slots)
