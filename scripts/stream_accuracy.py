"""Streaming vs offline WER per evalset source, for engine/policy variants, with no server
(``deployments.simulate``: the session's policy calls, each decode answered at once).

    python scripts/stream_accuracy.py --manifest ../shared/evalset/manifest_longform.jsonl \\
        --variant '{}' --variant '{"engine": {"quantize": "int8"}}' \\
        --variant '{"engine": {"quantize": "int8"}, "policy": {"vad": {"enabled": false}}}'

A variant is JSON: ``engine`` (EngineConfig fields) and ``policy`` (PolicyConfig fields).
Offline = the same engine (same quantization) on sequential 20 s windows, full 30 s encoder
input.  Also counts clips whose streamed transcript lacks the offline transcript's last word,
and prints the CPU time of the streamed decodes (``--threads 1``: a replica's share) and the
commit delay: how much audio followed a word in the window that committed it (the policy's
part of the commit lag, decodes answered at once; the close flush not counted).

``--concat K`` joins each run of K consecutive clips of one source (in manifest order) into
one recording, scored per recording: a long-form set larger than the five long recordings
(the 100 LJSpeech clips are one chapter read in order: LJ001-0001..0015 is the long-form
set's LJSpeech recording).  One word of a 122-word recording is 0.8 points, so a policy
change that moves a few words there is told apart from noise on these.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from deployments.config import EngineConfig
from deployments.offline import transcribe_long
from deployments.simulate import simulate_stream
from deployments.streaming import PolicyConfig
from deployments.whisper.engine import WhisperEngine
from ingest.audio import read_wav
from ingest.loadtest import percentile
from ingest.wer import keeps_last_word, normalize, wer

ROOT = Path(__file__).resolve().parent.parent


def by_source(sources: list[str], refs: list[str], hyps: list[str]) -> dict[str, float]:
    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for s, r, h in zip(sources, refs, hyps, strict=True):
        groups[s][0].append(r)
        groups[s][1].append(h)
    return {s: round(100 * wer(*g), 1) for s, g in groups.items()}


def concatenated(
    rows: list[dict[str, Any]], audio: list[np.ndarray], k: int
) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Runs of ``k`` consecutive clips of one source joined: (ids, audio, reference texts)."""
    ids: list[str] = []
    joined: list[np.ndarray] = []
    texts: list[str] = []
    pairs = list(zip(rows, audio, strict=True))
    for source, group in itertools.groupby(pairs, key=lambda p: str(p[0]["audio"]).split("/")[0]):
        clips = list(group)
        for start in range(0, len(clips), k):
            run = clips[start : start + k]
            ids.append(f"{source}-{start // k}")
            joined.append(np.concatenate([a for _, a in run]))
            texts.append(" ".join(str(r["text"]) for r, _ in run))
    return ids, joined, texts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--manifest", type=Path, default=ROOT.parent / "shared/evalset/manifest_longform.jsonl"
    )
    parser.add_argument("--variant", action="append", default=[], help="JSON; repeatable")
    parser.add_argument("--every", type=int, default=1, help="use every n-th clip")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concat", type=int, default=0, help="join runs of K clips of a source")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines()][:: args.every]
    audio = [read_wav(args.manifest.parent / r["audio"]).samples for r in rows]
    refs = [str(r["text"]) for r in rows]
    long = "longform" in args.manifest.name
    sources = [str(r["id"] if long else r["audio"].split("/")[0])[:18] for r in rows]
    if args.concat > 1:
        sources, audio, refs = concatenated(rows, audio, args.concat)
    offline: dict[str, list[str]] = {}
    for spec in args.variant or ["{}"]:
        variant: dict[str, Any] = json.loads(spec)
        config = EngineConfig(num_threads=args.threads, **variant.get("engine", {}))
        engine = WhisperEngine(config)
        # the offline baseline: full window, same weights and encoder precision
        weights = f"{config.quantize}, bf16 encoder {config.cpu_bf16_encoder}"
        if weights not in offline:
            base = WhisperEngine(
                EngineConfig(
                    num_threads=args.threads,
                    quantize=config.quantize,
                    cpu_bf16_encoder=config.cpu_bf16_encoder,
                )
            )
            offline[weights] = ["".join(w.text for w in transcribe_long(base.transcribe, a)) for a in audio]
            off = offline[weights]
            print(f"offline ({weights}): WER {100 * wer(refs, off):.2f} {by_source(sources, refs, off)}")
        started, hyps, decodes, lost = time.process_time(), [], 0, []
        delays: list[float] = []
        for a, off_text in zip(audio, offline[weights], strict=True):
            result = simulate_stream(engine.transcribe, a, PolicyConfig(**variant.get("policy", {})))
            hyps.append(result.text)
            decodes += result.decodes
            delays += result.commit_delays
            o, s = normalize(off_text), normalize(result.text)
            if not keeps_last_word(o, s):
                lost.append((o[-3:], s[-3:]))
        print(
            f"{spec}: streaming WER {100 * wer(refs, hyps):.2f} {by_source(sources, refs, hyps)} "
            f"decodes {decodes}, CPU {time.process_time() - started:.0f} s, commit delay p50/p95 "
            f"{percentile(delays, 50):.2f}/{percentile(delays, 95):.2f} s, lost tails {len(lost)} {lost[:4]}",
            flush=True,
        )


if __name__ == "__main__":
    main()
