"""The token loop with and without CUDA graphs: time per batched decode and rows per second
at several batch sizes, and whether the two give the same transcripts.

    python scripts/graph_bench.py --device cuda --batches 1 8 32 64 [--model-dir DIR]

Rows: the bundled JFK sample (11 s), each with a prompt and the first words forced, the way
a streaming decode looks (as scripts/engine_profile.py).
"""

from __future__ import annotations

import argparse
import json
import time

from deployments.config import EngineConfig
from deployments.transcript import DecodeRequest
from deployments.whisper.engine import WhisperEngine
from ingest.audio import read_wav
from ingest.cli import SAMPLE_WAV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--engine", default="{}", help="JSON: more EngineConfig fields")
    args = parser.parse_args()
    audio = read_wav(SAMPLE_WAV).samples
    request = DecodeRequest(audio, 0.0, prompt="We choose to go to the moon.", forced="And so, my fellow")
    engines = {
        graphs: WhisperEngine(
            EngineConfig(
                device=args.device,
                model_dir=args.model_dir,
                cuda_graphs=graphs,
                graph_max_batch=max(args.batches),
                **json.loads(args.engine),
            )
        )
        for graphs in (False, True)
    }
    print("| batch | graphs | ms per decode | ms per row | rows/s | same text |")
    print("|---|---|---|---|---|---|")
    for size in args.batches:
        batch = [request] * size
        texts = {}
        for graphs, engine in engines.items():
            texts[graphs] = [h.text for h in engine.transcribe(batch)]  # warm-up (and capture)
            started = time.perf_counter()
            for _ in range(args.repeat):
                engine.transcribe(batch)
            per = (time.perf_counter() - started) / args.repeat
            same = texts[graphs] == texts[False]
            print(
                f"| {size} | {'on' if graphs else 'off'} | {per * 1000:.1f} | {per / size * 1000:.2f} "
                f"| {size / per:.0f} | {same} |",
                flush=True,
            )
    print("text:", texts[True][0])


if __name__ == "__main__":
    main()
