"""Where a batched decode's time goes (cProfile), on CPU or CUDA: the host-side hot spots of
the token loop that bound the GPU figure (README, GPU).

    python scripts/engine_profile.py --device cuda --batch 16 [--model-dir DIR]

Rows: the bundled JFK sample (11 s), each with the first words forced and a prompt, the way
a streaming decode looks.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from deployments.config import EngineConfig
from deployments.transcript import DecodeRequest
from deployments.whisper.engine import WhisperEngine
from ingest.audio import read_wav
from ingest.cli import SAMPLE_WAV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--engine", default="{}", help="JSON: more EngineConfig fields")
    args = parser.parse_args()
    import json

    config = EngineConfig(device=args.device, model_dir=args.model_dir, **json.loads(args.engine))
    engine = WhisperEngine(config)
    audio = read_wav(SAMPLE_WAV).samples
    request = DecodeRequest(audio, 0.0, prompt="We choose to go to the moon.", forced="And so, my fellow")
    batch = [request] * args.batch
    engine.transcribe(batch)  # warm-up (CUDA kernels, caches)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for _ in range(args.repeat):
        engine.transcribe(batch)
    profile.disable()
    per = (time.perf_counter() - started) / args.repeat
    row_ms = per / args.batch * 1000
    print(f"{engine.device}: batch {args.batch}: {per * 1000:.0f} ms per decode ({row_ms:.1f} ms/row)")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
