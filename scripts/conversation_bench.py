"""How fast a voice interface hears back (issue 10), against the local app (``ray_config.yaml``,
embedded Redis): spoken commands (espeak-ng, ``make setup-speech``), each followed by a
pause, streamed at real time with ``vad_events`` and the ``intents`` hook.

    python scripts/conversation_bench.py [--repeat 3] [--streams 1 4]

Per utterance, from the moment the client sent the audio where the command's speech ends:
``speech_final`` (the final that closes the utterance arrives), ``utterance_end`` arrives, and
``hook_result`` arrives (the intent).  Also whether the intent was right.  Prints markdown
(median of the runs' medians, spread in brackets); writes bench-results/conversation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.speech: the spoken commands the e2e hook test uses

from flood_bench import spread  # noqa: E402  (scripts/: the same median [min-max] cell)

from ingest import messages as m  # noqa: E402
from ingest.client import StreamOptions, StreamResult, stream_audio  # noqa: E402
from tests.speech import Spoken, spoken  # noqa: E402

COMMANDS = [
    ("Turn on the kitchen lights.", "lights_on"),
    ("What is the weather in Paris?", "weather"),
    ("Set a timer for five minutes.", "set_timer"),
    ("Switch off the bedroom lights.", "lights_off"),
    ("What time is it?", "time"),
]


async def one_stream(url: str, speech: Spoken) -> dict[str, list[float]]:
    arrivals: list[tuple[float, object]] = []
    options = StreamOptions(vad_events=True, hook="intents", interim_results=False, resume=False)
    result: StreamResult = await stream_audio(
        url, speech.samples, 16000, options, lambda msg: arrivals.append((time.monotonic(), msg))
    )
    if result.error is not None:
        raise RuntimeError(f"stream failed: {result.error}")
    finals = [(at, x) for at, x in arrivals if isinstance(x, m.Final) and x.speech_final]
    ends = [at for at, x in arrivals if isinstance(x, m.UtteranceEnd)]
    hooks = [(at, x) for at, x in arrivals if isinstance(x, m.HookResult)]
    out: dict[str, list[float]] = {"speech_final": [], "utterance_end": [], "hook_result": [], "right": []}
    for (_, span_end), (_, intent) in zip(speech.spans, COMMANDS, strict=True):
        spoken_at = result.sent_time(span_end)
        final = next((at for at, f in finals if f.end > span_end - 1.0), None)
        end = next((at for at in ends if at > spoken_at), None)
        hook = next(((at, h) for at, h in hooks if h.utterance.end > span_end - 1.0), None)
        if final is not None:
            out["speech_final"].append(final - spoken_at)
            finals = [(at, f) for at, f in finals if at > final]
        if end is not None:
            out["utterance_end"].append(end - spoken_at)
            ends = [at for at in ends if at > end]
        if hook is not None:
            out["hook_result"].append(hook[0] - spoken_at)
            out["right"].append(float(hook[1].result.get("intent") == intent))
            hooks = [x for x in hooks if x[0] > hook[0]]
    return out


async def run(url: str, speech: Spoken, streams: int) -> dict[str, list[float]]:
    parts = await asyncio.gather(*(one_stream(url, speech) for _ in range(streams)))
    return {k: [v for p in parts for v in p[k]] for k in parts[0]}


def cell(values: list[float]) -> str:
    return spread(values) if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    from cluster.redis_server import EmbeddedRedis
    from deployments.local import start_local

    speech = spoken([c for c, _ in COMMANDS])
    rows: dict[str, Any] = {}
    with EmbeddedRedis() as redis:
        url = start_local(redis_url=redis.url)
        asyncio.run(run(url, speech, 1))  # warm-up: model loaded, first decodes compiled
        for n in args.streams:
            runs = [asyncio.run(run(url, speech, n)) for _ in range(args.repeat)]
            rows[str(n)] = {
                k: [statistics.median(r[k]) for r in runs if r[k]]
                for k in ("speech_final", "utterance_end", "hook_result")
            }
            rows[str(n)]["right"] = [sum(r["right"]) / max(1, len(r["right"])) for r in runs]
            rows[str(n)]["answered"] = [len(r["hook_result"]) / (n * len(COMMANDS)) for r in runs]
    machine = f"{platform.machine()}, {os.cpu_count()} cpus"
    print(f"\n{machine}; {len(COMMANDS)} spoken commands per stream, 1.5 s pauses, {args.repeat} runs\n")
    head = ["streams", "speech_final after speech end (s)", "utterance_end (s)", "hook_result (s)"]
    print("| " + " | ".join([*head, "intents right", "answered"]) + " |")
    print("|---|---|---|---|---|---|")
    for n, r in rows.items():
        print(
            f"| {n} | {cell(r['speech_final'])} | {cell(r['utterance_end'])} | {cell(r['hook_result'])} "
            f"| {statistics.mean(r['right']):.0%} | {statistics.mean(r['answered']):.0%} |"
        )
    out = ROOT / "bench-results" / "conversation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
