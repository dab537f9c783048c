"""An example utterance hook: rule-based intents for a voice assistant (lights, timers,
weather, time, stop).  A real assistant would put its NLU model here; the contract is the
same: ``__call__`` gets the utterance as a dict (``ingest.messages.Utterance``) and returns a
JSON object, sent to the client as ``hook_result.result``.

Enable it in ``ray_config.yaml``: ``ingress.hooks.handlers: {intents: deployments.intents:IntentHandler}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ray import serve

_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "ten": 10, "fifteen": 15, "twenty": 20}


@dataclass(frozen=True)
class Rule:
    intent: str
    pattern: re.Pattern[str]


RULES = [
    Rule("lights_on", re.compile(r"\b(turn|switch) on (the )?(?P<room>\w+ )?lights?\b|\blights? on\b")),
    Rule("lights_on", re.compile(r"\b(turn|switch) (the )?(?P<room>\w+ )?lights? on\b")),
    Rule("lights_off", re.compile(r"\b(turn|switch) off (the )?(?P<room>\w+ )?lights?\b|\blights? off\b")),
    Rule("lights_off", re.compile(r"\b(turn|switch) (the )?(?P<room>\w+ )?lights? off\b")),
    Rule("set_timer", re.compile(r"\btimer for (?P<amount>\d+|\w+) (?P<unit>second|minute|hour)s?\b")),
    Rule("weather", re.compile(r"\bweather\b(.* in (?P<place>[a-z]+( [a-z]+)?))?")),
    Rule("time", re.compile(r"\bwhat time is it\b|\bwhat is the time\b")),
    Rule("stop", re.compile(r"^(stop|cancel|never mind)\b")),
]


def normalise(text: str) -> str:
    """Lower case, punctuation dropped: how the rules see an utterance."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def match_intent(text: str) -> dict[str, Any]:
    """The first rule that matches: ``{"intent", "slots", "text"}``; intent ``none`` else."""
    said = normalise(text)
    for rule in RULES:
        found = rule.pattern.search(said)
        if found is None:
            continue
        slots = {k: v.strip() for k, v in found.groupdict().items() if v}
        if "amount" in slots:
            amount = slots["amount"]
            slots["amount"] = str(_NUMBERS.get(amount, amount))
        return {"intent": rule.intent, "slots": slots, "text": said}
    return {"intent": "none", "slots": {}, "text": said}


@serve.deployment(ray_actor_options={"num_cpus": 0})
class IntentHandler:
    async def __call__(self, utterance: dict[str, Any]) -> dict[str, Any]:
        return match_intent(str(utterance.get("text", "")))
