"""Model-plane capacity without Ray or sockets: N real-time streams, each a real
:class:`~deployments.session.StreamSession` (protocol, VAD, streaming policy) over an
in-memory transport, their decodes batched across streams onto one engine the way the ASR
deployment's ``@serve.batch`` does (one batch at a time, ``--max-batch``, ``--batch-wait``).

    python scripts/inproc_capacity.py --streams 50 100 200 --device cuda --clips DIR

The engine runs in its own process (as the ASR replica does).  What it leaves out is the
network path (proxy, WebSocket, Ray handle); it is how the GPU
figure is measured where Ray cannot be installed, and on CPU it shows what Serve adds.
Latency definitions are the load tester's (``ingest.client.StreamResult``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cluster.serve_config import load_serve_config, merge
from deployments.config import EngineConfig
from deployments.session import StreamSession
from deployments.streaming import PolicyConfig
from deployments.transcript import DecodeRequest, Hypothesis
from ingest import messages as m
from ingest.audio import encode_pcm, read_wav
from ingest.client import StreamResult
from ingest.loadtest import percentile
from ingest.protocol import Limits
from ingest.wer import wer

FRAME_S = 0.1
ROOT = Path(__file__).resolve().parent.parent


class MemoryTransport:
    """The session's side of a socket, recording what a client would see, with arrival times."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.result = StreamResult()
        self.closed = asyncio.Event()

    async def receive(self) -> str | bytes | None:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        self.result.record(m.SERVER_MESSAGE.validate_json(text), time.monotonic())

    async def close(self, code: int) -> None:
        self.result.close_code = code
        self.result.finished_at = time.monotonic()
        self.closed.set()


@dataclass
class Batcher:
    """``@serve.batch`` semantics on one engine: requests queue; a batch takes what is there,
    waits up to ``wait_s`` for more (up to ``max_batch``) and runs in a worker thread."""

    transcribe: object
    max_batch: int
    wait_s: float
    sizes: list[int] = field(default_factory=list)
    busy_s: float = 0.0
    queue: asyncio.Queue[tuple[DecodeRequest, asyncio.Future[Hypothesis]]] = field(
        default_factory=asyncio.Queue
    )

    async def decode(self, request: DecodeRequest) -> Hypothesis:
        future: asyncio.Future[Hypothesis] = asyncio.get_running_loop().create_future()
        await self.queue.put((request, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(
                        await asyncio.wait_for(self.queue.get(), max(0.0, deadline - time.monotonic()))
                    )
                except TimeoutError:
                    break
            started = time.monotonic()
            try:
                hyps = await asyncio.to_thread(self.transcribe, [r for r, _ in batch])  # type: ignore[arg-type]
            except Exception as e:  # the streams see the failure; the batcher carries on
                for _, f in batch:
                    f.set_exception(e)
                continue
            self.busy_s += time.monotonic() - started
            self.sizes.append(len(batch))
            for (_, f), h in zip(batch, hyps, strict=True):
                f.set_result(h)


class GpuSampler:
    """GPU utilisation (nvidia-ml-py) sampled every 0.5 s in a thread, where there is one."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:  # no GPU or no NVML: nothing to sample
            self._nvml = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._nvml is not None and not self._stop.wait(0.5):
            self.samples.append(float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))

    def stop(self) -> float:
        self._stop.set()
        return float(np.mean(self.samples)) if self.samples else float("nan")


async def one_stream(
    pcm: list[bytes], seconds: float, batcher: Batcher, policy: PolicyConfig, delay: float
) -> StreamResult:
    await asyncio.sleep(delay)  # stagger: real streams do not start in lockstep
    t = MemoryTransport()
    session = StreamSession(f"s{id(t)}", t, batcher.decode, policy, Limits())
    task = asyncio.create_task(session.run())
    await t.inbox.put(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))
    t.result.started_at = start = time.monotonic()
    for i, frame in enumerate(pcm):
        await asyncio.sleep(max(0.0, start + i * FRAME_S - time.monotonic()))
        await t.inbox.put(frame)
        t.result.sent.append((min(seconds, (i + 1) * FRAME_S), time.monotonic()))
    await t.inbox.put(json.dumps({"type": "close"}))
    await asyncio.wait_for(t.closed.wait(), timeout=300)
    await task
    return t.result


def served_args() -> dict[str, Any]:
    """The app's args in ray_config.yaml: the engine and policy this run measures (not
    ``deployments.app.served_args``: that module imports Ray, which this harness runs without)."""
    app = load_serve_config(ROOT / "ray_config.yaml").applications[0]
    return dict(app.args)


def served_policy(args: argparse.Namespace) -> PolicyConfig:
    policy = merge(served_args()["ingress"].get("policy", {}), json.loads(args.policy))
    if args.step is not None:
        policy["step_s"] = args.step
    return PolicyConfig.model_validate(policy)


async def run_level(
    n: int, clips: list[tuple[list[bytes], float, str]], engine: object, args: argparse.Namespace
) -> dict[str, object]:
    batcher = Batcher(engine.transcribe, args.max_batch, args.batch_wait)  # type: ignore[attr-defined]
    worker = asyncio.create_task(batcher.run())
    policy = served_policy(args)
    gpu = GpuSampler()
    cpu0, wall0 = time.process_time(), time.monotonic()
    chosen = [clips[i % len(clips)] for i in range(n)]
    results = await asyncio.gather(
        *(one_stream(p, s, batcher, policy, random.uniform(0, 1.0)) for p, s, _ in chosen)
    )
    wall = time.monotonic() - wall0
    worker.cancel()
    partial = [x for r in results for x in r.partial_latencies()]
    commit = [x for r in results for x in r.commit_lags()]
    ok = [r for r in results if r.error is None and r.summary is not None]
    sustained = sum(1 for r in ok if r.finished_at - r.sent[-1][1] <= 5.0)
    return {
        "streams": n,
        "sustained": sustained,
        "errors": n - len(ok),
        "partial_p50_s": percentile(partial, 50),
        "partial_p95_s": percentile(partial, 95),
        "commit_p50_s": percentile(commit, 50),
        "commit_p95_s": percentile(commit, 95),
        "wer": wer([ref for _, _, ref in chosen], [r.text for r in results]),
        "batch_mean": float(np.mean(batcher.sizes)) if batcher.sizes else 0.0,
        "batch_p95": percentile([float(b) for b in batcher.sizes], 95),
        "engine_busy": batcher.busy_s / wall,
        "gpu_util_mean": gpu.stop(),
        "process_cpu": (time.process_time() - cpu0) / wall,  # cores used by this process
    }


_ENGINE: object = None


def _load_engine(config: EngineConfig) -> None:
    global _ENGINE
    from deployments.whisper.engine import WhisperEngine

    _ENGINE = WhisperEngine(config)


def _transcribe(requests: list[DecodeRequest]) -> list[Hypothesis]:
    return _ENGINE.transcribe(requests)  # type: ignore[attr-defined, no-any-return]


class EngineProcess:
    """The engine in its own process, as the ASR replica is: the streams' event loop and the
    decode loop do not share one GIL."""

    def __init__(self, config: EngineConfig) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_load_engine, initargs=(config,))
        self.pool.submit(_transcribe, []).result()  # loaded before the clock starts

    def transcribe(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        return self.pool.submit(_transcribe, requests).result()


def load_clips(manifest: Path, limit: int) -> list[tuple[list[bytes], float, str]]:
    clips = []
    for line in manifest.read_text().splitlines()[:limit]:
        row = json.loads(line)
        samples = read_wav(manifest.parent / row["audio"]).samples
        step = int(FRAME_S * 16000)
        frames = [encode_pcm(samples[i : i + step], "pcm_s16le") for i in range(0, len(samples), step)]
        clips.append((frames, len(samples) / 16000, str(row["text"])))
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quantize", default="none", choices=["none", "int8"])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-wait", type=float, default=0.05)
    parser.add_argument("--step", type=float, default=None, help="decode step (default: ray_config.yaml's)")
    parser.add_argument("--policy", default="{}", help="JSON over ray_config.yaml's streaming policy")
    parser.add_argument("--engine", default="{}", help="JSON over ray_config.yaml's engine args")
    parser.add_argument("--stop-above", type=float, default=None, help="stop once commit p95 passes this")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from deployments.whisper.engine import pick_device

    base = {**served_args()["engine"], "quantize": args.quantize}
    config = EngineConfig.model_validate(
        merge(
            base,
            {"device": args.device, "model_dir": args.model_dir, "num_threads": args.threads}
            | json.loads(args.engine),
        )
    )
    engine = EngineProcess(config)
    clips = load_clips(args.manifest, args.limit)
    rows = []
    for n in args.streams:
        row = asyncio.run(run_level(n, clips, engine, args))
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.stop_above is not None and float(row["commit_p95_s"]) > args.stop_above:  # type: ignore[arg-type]
            break
    device = pick_device(args.device)
    machine = f"{platform.machine()} {os.cpu_count()} cpus, engine on {device}"
    if device.type == "cuda":
        import torch

        machine += f" ({torch.cuda.get_device_name(0)})"
    print(f"\n{machine}; max_batch {args.max_batch}, policy {served_policy(args).model_dump_json()}")
    print(
        "| streams | sustained | partial p50 / p95 (s) | commit lag p50 / p95 (s) "
        "| batch mean / p95 | engine busy | GPU util | WER |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['streams']} | {r['sustained']} | {r['partial_p50_s']:.2f} / {r['partial_p95_s']:.2f} "
            f"| {r['commit_p50_s']:.2f} / {r['commit_p95_s']:.2f} "
            f"| {r['batch_mean']:.1f} / {r['batch_p95']:.0f} "
            f"| {r['engine_busy']:.2f} | {r['gpu_util_mean']:.0f} % | {r['wer']:.3f} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "levels": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
