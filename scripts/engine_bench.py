"""Cost of one decode on this machine: encoder vs the token loop, float32 vs int8 output
projection vs that plus the bfloat16 encoder (CPU), a 30 s encoder window vs a shorter one,
batch 1 vs 4.

    python scripts/engine_bench.py [--threads 2] [--repeat 4]

The clip is the bundled JFK sample (11 s, 22 words, decoded without a forced prefix).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

from deployments.config import EngineConfig
from deployments.whisper.engine import WhisperEngine
from deployments.whisper.features import log_mel, pad_frames
from ingest.audio import read_wav
from ingest.cli import SAMPLE_WAV


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def _whole_decode(
    engine: WhisperEngine, mel: torch.Tensor, rows: tuple[list[str], list[int], list[float]]
) -> object:
    return engine.decoder.decode(engine.run_encoder(mel), *rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    mel = log_mel(torch.from_numpy(read_wav(SAMPLE_WAV).samples))
    n = mel.shape[-1]
    print("| engine | encoder window | batch | encoder (s) | whole decode (s) | token loop per row (s) |")
    print("|---|---|---|---|---|---|")
    for quantize, bf16 in (("none", "off"), ("int8", "off"), ("int8", "on")):
        config = EngineConfig(num_threads=args.threads, quantize=quantize, cpu_bf16_encoder=bf16)  # type: ignore[arg-type]
        engine = WhisperEngine(config)
        label = quantize + (", bf16 encoder" if engine.encoder_bf16 else "")
        with torch.inference_mode():
            for frames in (3000, 2000, 1600):
                for batch in (1, 4):
                    m = pad_frames(mel, frames)[None].repeat(batch, 1, 1)
                    enc = timed(partial(engine.run_encoder, m), args.repeat)
                    rows = ([""] * batch, [n] * batch, [0.0] * batch)
                    whole = partial(_whole_decode, engine, m, rows)
                    full = timed(whole, args.repeat)
                    print(
                        f"| {label} | {frames / 100:.0f} s | {batch} | {enc:.3f} | {full:.3f} "
                        f"| {(full - enc) / batch:.3f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
