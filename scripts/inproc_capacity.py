"""Model-plane capacity without Ray or sockets: N real-time streams, each a real
:class:`~deployments.session.StreamSession` (protocol, VAD, streaming policy) over an
in-memory transport, their decodes batched across streams onto one engine the way the ASR
deployment's ``@serve.batch`` does (one batch at a time, ``--max-batch``, ``--batch-wait``).

    python scripts/inproc_capacity.py --streams 50 100 200 --device cuda --manifest M --workers 8

The sessions run in ``--workers`` processes (stream i in worker i % K), so the load generator
is not one GIL; the engine runs in its own process (as the ASR replica does) together with the
batcher, which batches across all workers' streams; ``--engines E`` runs E of them on the same
device (replicas sharing a GPU), worker w decoding on engine w % E.  ``--repeat`` runs each level several
times (the table shows medians and [min-max]).  What it leaves out is the network path (proxy,
WebSocket, Ray handle); it is how the GPU figure is measured where Ray cannot be installed, and
on CPU it shows what Serve adds.  Latency definitions are the load tester's
(``ingest.client.StreamResult``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import itertools
import json
import multiprocessing
import os
import pickle
import platform
import pstats
import queue
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np

from cluster.serve_config import AppConfig, load_layer, load_serve_config, merge
from deployments.config import EngineConfig
from deployments.session import Decode, StreamSession
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
CTX = multiprocessing.get_context("spawn")  # fork would copy the parent's threads and torch state
CLOSE_TIMEOUT_S = 300.0  # a stream waits this long for the session to close

RequestId = tuple[int, int]  # (run tag, number within the worker's run)
# on the shared request queue: (worker, request id, request); worker -1: a stats request; None: stop
RequestItem = tuple[int, RequestId, DecodeRequest | None] | None
# on a worker's response queue: (request id, outcome); outcome None with number -1: reader stops
ResponseItem = tuple[RequestId, Hypothesis | BaseException | None]
Row = dict[str, float]


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


# --- the engine process -------------------------------------------------------------------


@dataclass
class EngineStats:
    sizes: list[int]  # each batch's size
    busy_s: float  # inside engine.transcribe
    cpu_s: float  # the engine process's CPU time


def _picklable(e: BaseException) -> BaseException:
    """An exception that survives the response queue (an unpicklable one would be dropped by the
    queue's feeder thread, and the stream would hang)."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


class EngineBatcher:
    """``@serve.batch`` semantics on one engine, in the engine process: a batch takes what is
    queued, waits up to ``wait_s`` for more (up to ``max_batch``) and runs.  A receiver thread
    moves requests from the shared queue to a local one, so unpickling the next requests'
    audio overlaps the decode instead of following it."""

    def __init__(
        self,
        transcribe: Callable[[list[DecodeRequest]], list[Hypothesis]],
        max_batch: int,
        wait_s: float,
        responses: list[Queue[ResponseItem]],
    ) -> None:
        self.transcribe, self.max_batch, self.wait_s = transcribe, max_batch, wait_s
        self.responses = responses
        self.inbox: queue.Queue[tuple[int, RequestId, DecodeRequest] | None] = queue.Queue()
        self.lock = threading.Lock()  # the stats: written by the batcher, taken by the receiver
        self.stats = EngineStats([], 0.0, 0.0)
        self.cpu0 = time.process_time()

    def take_stats(self) -> EngineStats:
        """The stats since the last call (the parent calls before and after each run)."""
        with self.lock:
            stats, self.stats = self.stats, EngineStats([], 0.0, 0.0)
            now = time.process_time()
            stats.cpu_s, self.cpu0 = now - self.cpu0, now
        return stats

    def receive(self, requests: Queue[RequestItem], control: Queue[str | EngineStats]) -> None:
        parent = multiprocessing.parent_process()
        while True:
            try:
                item = requests.get(timeout=5.0)
            except queue.Empty:
                if parent is None or parent.is_alive():
                    continue
                item = None  # the parent is gone: do not outlive it
            if item is None:
                self.inbox.put(None)
                return
            worker, rid, request = item
            if worker < 0 or request is None:
                control.put(self.take_stats())
            else:
                self.inbox.put((worker, rid, request))

    def run(self) -> None:
        while (first := self.inbox.get()) is not None:
            batch, stop = [first], False
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    item = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            started = time.monotonic()
            outcomes: list[Hypothesis | BaseException]
            try:
                outcomes = list(self.transcribe([r for _, _, r in batch]))
            except Exception as e:  # the streams see the failure; the batcher carries on
                outcomes = [_picklable(e)] * len(batch)
            else:
                with self.lock:
                    self.stats.busy_s += time.monotonic() - started
                    self.stats.sizes.append(len(batch))
            for (worker, rid, _), outcome in zip(batch, outcomes, strict=True):
                self.responses[worker].put((rid, outcome))
            if stop:
                return


def _engine_main(
    config: EngineConfig,
    max_batch: int,
    wait_s: float,
    requests: Queue[RequestItem],
    responses: list[Queue[ResponseItem]],
    control: Queue[str | EngineStats],
) -> None:
    try:
        from deployments.whisper.engine import WhisperEngine

        engine = WhisperEngine(config)
    except BaseException:
        control.put(traceback.format_exc())
        return
    transcribe: Callable[[list[DecodeRequest]], list[Hypothesis]] = engine.transcribe
    # where a streaming batch's time goes (the mix of windows, prompts and forced words that
    # scripts/engine_profile.py's copies of one sample do not have): cProfile of every batch,
    # written to this file when the engine stops
    profile_to = os.environ.get("RAYSCRIBE_ENGINE_PROFILE")
    profile = cProfile.Profile()
    if profile_to:

        def profiled(batch: list[DecodeRequest]) -> list[Hypothesis]:
            profile.enable()
            try:
                return engine.transcribe(batch)
            finally:
                profile.disable()

        transcribe = profiled

    batcher = EngineBatcher(transcribe, max_batch, wait_s, responses)
    threading.Thread(target=batcher.receive, args=(requests, control), daemon=True).start()
    control.put("ready")  # loaded before any clock starts
    batcher.run()
    if profile_to:
        with open(profile_to, "w") as out:
            stats = pstats.Stats(profile, stream=out)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(30)


def _get(q: Queue[Any], procs: list[SpawnProcess], timeout: float, what: str) -> Any:
    """The next item of ``q``; raises if it does not come in ``timeout`` s or one of ``procs``
    dies meanwhile (a crashed process would otherwise leave the caller waiting forever)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return q.get(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            pass
        dead = [p for p in procs if not p.is_alive()]
        if dead:
            try:  # what it put before exiting may still be in the pipe
                return q.get(timeout=5.0)
            except queue.Empty:
                p = dead[0]
                raise RuntimeError(f"{p.name} exited (code {p.exitcode}) while waiting for {what}") from None
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s")


def _stop(procs: list[SpawnProcess], grace_s: float) -> None:
    """Join, then terminate, then kill: no process outlives its level (or the run)."""
    for p in procs:
        p.join(grace_s)
        if p.is_alive():
            p.terminate()
            p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)


class EngineProcess:
    """The engine and the batcher in their own process, as the ASR replica is: the streams'
    event loops and the decode loop do not share a GIL.  Several of them on one GPU are
    several replicas sharing it (``num_gpus: 0.5``): each batch's host work on its own core."""

    def __init__(
        self, config: EngineConfig, max_batch: int, wait_s: float, workers: int, name: str = "engine"
    ) -> None:
        self.requests: Queue[RequestItem] = CTX.Queue()
        self.responses: list[Queue[ResponseItem]] = [CTX.Queue() for _ in range(workers)]
        self.control: Queue[str | EngineStats] = CTX.Queue()
        self.process = CTX.Process(
            target=_engine_main,
            args=(config, max_batch, wait_s, self.requests, self.responses, self.control),
            name=name,
            daemon=True,
        )
        self.process.start()

    def wait_ready(self) -> None:
        """Returns once the engine has loaded (they load in parallel: started first, then waited on)."""
        ready = _get(self.control, [self.process], 1800, f"{self.process.name} to load")
        if ready != "ready":
            self.close()
            raise RuntimeError(f"{self.process.name} failed to load:\n{ready}")

    def stats(self) -> EngineStats:
        self.requests.put((-1, (0, 0), None))
        stats = _get(self.control, [self.process], 60, "engine stats")
        assert isinstance(stats, EngineStats)
        return stats

    def close(self) -> None:
        if self.process.is_alive():
            self.requests.put(None)
        _stop([self.process], 30)
        queues: list[Queue[Any]] = [self.requests, self.control, *self.responses]
        for q in queues:
            q.cancel_join_thread()  # a dead reader must not hang this process's exit


# --- the worker processes (the sessions) --------------------------------------------------


class EngineClient:
    """A worker's decode: the request goes on the engine's shared queue; a thread reads this
    worker's response queue and resolves the request's future on the event loop."""

    def __init__(
        self, worker: int, tag: int, requests: Queue[RequestItem], responses: Queue[ResponseItem]
    ) -> None:
        self.worker, self.tag, self.requests, self.responses = worker, tag, requests, responses
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[Hypothesis]] = {}
        self.ids = itertools.count()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    async def decode(self, request: DecodeRequest) -> Hypothesis:
        rid = next(self.ids)
        self.pending[rid] = future = self.loop.create_future()
        self.requests.put((self.worker, (self.tag, rid), request))
        hypothesis: Hypothesis = await future
        return hypothesis

    def _read(self) -> None:
        while True:
            (tag, rid), outcome = self.responses.get()
            if tag != self.tag:  # left over from an earlier run that failed
                continue
            if rid < 0:
                return
            self.loop.call_soon_threadsafe(self._resolve, rid, outcome)

    def _resolve(self, rid: int, outcome: Hypothesis | BaseException | None) -> None:
        future = self.pending.pop(rid, None)
        if future is None or future.done():  # cancelled meanwhile
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            assert outcome is not None
            future.set_result(outcome)

    def close(self) -> None:
        self.responses.put(((self.tag, -1), None))
        self.reader.join(5)


@dataclass
class WorkerPlan:
    worker: int
    tag: int  # the run: responses to an earlier run's requests are dropped
    policy: PolicyConfig
    clips: dict[int, tuple[list[bytes], float]]  # clip index -> (0.1 s frames, seconds): only its own
    streams: list[tuple[int, int, float]] = field(default_factory=list)  # (stream, clip, start delay)


@dataclass
class WorkerReport:
    worker: int
    results: list[tuple[int, StreamResult]]  # (stream index, result)
    cpu_s: float  # this process's CPU time while the streams ran


async def one_stream(
    pcm: list[bytes], seconds: float, decode: Decode, policy: PolicyConfig, delay: float
) -> StreamResult:
    await asyncio.sleep(delay)  # stagger: real streams do not start in lockstep
    t = MemoryTransport()
    session = StreamSession(f"s{id(t)}", t, decode, policy, Limits())
    task = asyncio.create_task(session.run())
    await t.inbox.put(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))
    t.result.started_at = start = time.monotonic()
    for i, frame in enumerate(pcm):
        await asyncio.sleep(max(0.0, start + i * FRAME_S - time.monotonic()))
        await t.inbox.put(frame)
        t.result.sent.append((min(seconds, (i + 1) * FRAME_S), time.monotonic()))
    await t.inbox.put(json.dumps({"type": "close"}))
    await asyncio.wait_for(t.closed.wait(), timeout=CLOSE_TIMEOUT_S)
    await task
    return t.result


async def _worker_streams(
    plan: WorkerPlan, requests: Queue[RequestItem], responses: Queue[ResponseItem]
) -> list[tuple[int, StreamResult]]:
    client = EngineClient(plan.worker, plan.tag, requests, responses)
    try:
        results = await asyncio.gather(
            *(one_stream(*plan.clips[c], client.decode, plan.policy, d) for _, c, d in plan.streams)
        )
    finally:
        client.close()
    return [(i, r) for (i, _, _), r in zip(plan.streams, results, strict=True)]


def _worker_main(
    plan: WorkerPlan,
    requests: Queue[RequestItem],
    responses: Queue[ResponseItem],
    results: Queue[tuple[str, int, Any]],
    go: Event,
) -> None:
    try:
        import torch

        # one thread per process: many workers x torch's default threads would thrash the cores
        # (silero_vad imports torch; the VAD itself runs in onnxruntime, on one thread)
        torch.set_num_threads(1)
        if plan.policy.vad.enabled:
            from deployments.vad import StreamVad

            StreamVad()  # loads the model now, not in the first stream's clock
        results.put(("ready", plan.worker, None))
        if not go.wait(600):
            return  # the parent gave up
        cpu0 = time.process_time()
        streams = asyncio.run(_worker_streams(plan, requests, responses))
        results.put(("done", plan.worker, WorkerReport(plan.worker, streams, time.process_time() - cpu0)))
    except BaseException:
        results.put(("error", plan.worker, traceback.format_exc()))


# --- the parent ---------------------------------------------------------------------------


class GpuSampler:
    """GPU utilisation (nvidia-ml-py) sampled every 0.5 s in a thread, where there is one."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._nvml: Any = None
        try:
            self._nvml = importlib.import_module("pynvml")
            self._nvml.nvmlInit()
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(0)
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


def served_app(layers: list[str]) -> AppConfig:
    """The app in ray_config.yaml with ``layers`` (``--layer``) over it: the engine, policy and
    batching this run measures (not ``deployments.app.served_args``: that module imports Ray,
    which this harness runs without)."""
    return load_serve_config(ROOT / "ray_config.yaml", [load_layer(x) for x in layers]).applications[0]


def served_policy(args: argparse.Namespace) -> PolicyConfig:
    policy = merge(served_app(args.layer).args["ingress"].get("policy", {}), json.loads(args.policy))
    if args.step is not None:
        policy["step_s"] = args.step
    return PolicyConfig.model_validate(policy)


def run_level(
    n: int,
    clips: list[tuple[list[bytes], float, str]],
    engines: list[EngineProcess],
    args: argparse.Namespace,
    tag: int,
) -> Row:
    policy = served_policy(args)
    k = min(args.workers, n)
    plans = [WorkerPlan(w, tag, policy, {}) for w in range(k)]
    for i in range(n):  # stream i: clip i % len(clips), in worker i % k
        c, plan = i % len(clips), plans[i % k]
        plan.clips[c] = clips[c][:2]
        plan.streams.append((i, c, random.uniform(0, 1.0)))
    results: Queue[tuple[str, int, Any]] = CTX.Queue()
    go = CTX.Event()
    # worker w's streams decode on engine w % E (Serve's router spreads requests, not streams,
    # over replicas; with as many workers as engines or more, each engine gets its share)
    serving = [engines[p.worker % len(engines)] for p in plans]
    procs = [
        CTX.Process(
            target=_worker_main,
            args=(p, e.requests, e.responses[p.worker], results, go),
            name=f"worker {p.worker}",
            daemon=True,
        )
        for p, e in zip(plans, serving, strict=True)
    ]
    alive = [e.process for e in engines]
    clean = False
    try:
        for p in procs:
            p.start()
        for _ in procs:
            kind, worker, payload = _get(results, [*alive, *procs], 300, "workers to be ready")
            if kind != "ready":
                raise RuntimeError(f"worker {worker} failed:\n{payload}")
        for e in engines:
            e.stats()  # resets the engine's counters
        gpu = GpuSampler()
        wall0 = time.monotonic()
        go.set()
        reports: list[WorkerReport] = []
        longest = max(s for _, s, _ in clips) + 1.0 + CLOSE_TIMEOUT_S + 60
        while len(reports) < k:
            waiting = [p for w, p in enumerate(procs) if w not in {r.worker for r in reports}]
            kind, worker, payload = _get(results, [*alive, *waiting], longest, "worker results")
            if kind != "done":
                raise RuntimeError(f"worker {worker} failed:\n{payload}")
            reports.append(payload)
        wall = time.monotonic() - wall0
        each = [e.stats() for e in engines]
        gpu_util = gpu.stop()
        clean = True
    finally:  # after a failure, workers still waiting for go or streaming are terminated
        _stop(procs, 10 if clean else 0)
        results.cancel_join_thread()
    by_stream = dict(r for report in reports for r in report.results)
    ordered = [by_stream[i] for i in range(n)]
    partial = [x for r in ordered for x in r.partial_latencies()]
    commit = [x for r in ordered for x in r.commit_lags()]
    ok = [r for r in ordered if r.error is None and r.summary is not None]
    sustained = sum(1 for r in ok if r.finished_at - r.sent[-1][1] <= 5.0)
    sizes = [float(b) for e in each for b in e.sizes]
    return {
        "streams": n,
        "workers": k,
        "engines": len(engines),
        "sustained": sustained,
        "errors": n - len(ok),
        "partial_p50_s": percentile(partial, 50),
        "partial_p95_s": percentile(partial, 95),
        "commit_p50_s": percentile(commit, 50),
        "commit_p95_s": percentile(commit, 95),
        "wer": wer([clips[i % len(clips)][2] for i in range(n)], [r.text for r in ordered]),
        "batch_mean": float(np.mean(sizes)) if sizes else 0.0,
        "batch_p95": percentile(sizes, 95),
        # time inside transcribe, in the engine processes (their mean)
        "engine_busy": sum(e.busy_s for e in each) / len(each) / wall,
        "gpu_util_mean": gpu_util,
        "harness_cpu": sum(r.cpu_s for r in reports) / wall,  # cores the load generator used
        "engine_cpu": sum(e.cpu_s for e in each) / wall,  # cores the engine processes used
        "wall_s": wall,
    }


def load_clips(manifest: Path, limit: int) -> list[tuple[list[bytes], float, str]]:
    clips = []
    for line in manifest.read_text().splitlines()[:limit]:
        row = json.loads(line)
        samples = read_wav(manifest.parent / row["audio"]).samples
        step = int(FRAME_S * 16000)
        frames = [encode_pcm(samples[i : i + step], "pcm_s16le") for i in range(0, len(samples), step)]
        clips.append((frames, len(samples) / 16000, str(row["text"])))
    return clips


def median_row(runs: list[Row]) -> Row:
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def spread(runs: list[Row], key: str) -> str:
    """``median`` or, over several runs, ``median [min-max]``."""
    values = [r[key] for r in runs]
    text = f"{float(np.median(values)):.2f}"
    return text if len(runs) == 1 else f"{text} [{min(values):.2f}-{max(values):.2f}]"


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, EngineConfig]:
    """The command line, with what it leaves out taken from ray_config.yaml and its
    ``--layer``s: the engine config, and the batch size and wait of the ASRModel user_config."""
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
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        help="a config layer over ray_config.yaml (a name in cluster/layers/ or a file; repeatable)",
    )
    parser.add_argument("--max-batch", type=int, default=None, help="default: the ASRModel user_config's")
    parser.add_argument("--batch-wait", type=float, default=None, help="default: the ASRModel user_config's")
    parser.add_argument("--step", type=float, default=None, help="decode step (default: ray_config.yaml's)")
    parser.add_argument("--policy", default="{}", help="JSON over ray_config.yaml's streaming policy")
    parser.add_argument("--engine", default="{}", help="JSON over ray_config.yaml's engine args")
    parser.add_argument(
        "--stop-above", type=float, default=None, help="stop once a level's median commit p95 passes this"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes the sessions are spread over")
    parser.add_argument(
        "--engines", type=int, default=1, help="engine processes (replicas) sharing the device"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per level (the table shows medians)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.repeat < 1 or args.engines < 1:
        parser.error("--workers, --repeat and --engines must be at least 1")
    if args.workers < args.engines:
        parser.error("--workers must be at least --engines (each worker decodes on one engine)")
    app = served_app(args.layer)
    batching = app.options()["ASRModel"].get("user_config", {})
    if args.max_batch is None:
        args.max_batch = int(batching["max_batch_size"])
    if args.batch_wait is None:
        args.batch_wait = float(batching["batch_wait_timeout_s"])
    base = {**app.args["engine"], "quantize": args.quantize}
    config = EngineConfig.model_validate(
        merge(
            base,
            {"device": args.device, "model_dir": args.model_dir, "num_threads": args.threads}
            | json.loads(args.engine),
        )
    )
    return args, config


def main() -> None:
    args, config = parse_args()
    # `timeout` and the like send SIGTERM: exit through the finally blocks, which stop the children
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from deployments.whisper.engine import pick_device

    clips = load_clips(args.manifest, args.limit)
    engines = [
        EngineProcess(config, args.max_batch, args.batch_wait, args.workers, f"engine {i}")
        for i in range(args.engines)
    ]
    levels: list[list[Row]] = []
    try:
        for e in engines:
            e.wait_ready()
        tags = itertools.count()
        for n in args.streams:
            runs = []
            for run in range(args.repeat):
                row = {"run": run, **run_level(n, clips, engines, args, next(tags))}
                runs.append(row)
                print(json.dumps(row), flush=True)
            levels.append(runs)
            if args.stop_above is not None and median_row(runs)["commit_p95_s"] > args.stop_above:
                break
    finally:
        for e in engines:
            e.close()
    device = pick_device(args.device)
    machine = f"{platform.machine()} {os.cpu_count()} cpus, engine on {device}"
    if device.type == "cuda":
        import torch

        machine += f" ({torch.cuda.get_device_name(0)})"
    print(
        f"\n{machine}; {args.engines} engine process(es), max_batch {args.max_batch}, "
        f"{args.workers} session workers, "
        f"{args.repeat} run(s) per level{' (medians, p95 [min-max])' if args.repeat > 1 else ''}, "
        f"policy {served_policy(args).model_dump_json()}"
    )
    print(
        "| streams | sustained | partial p50 / p95 (s) | commit lag p50 / p95 (s) "
        "| batch mean / p95 | engine busy | harness CPU | GPU util | WER |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for runs in levels:
        r = median_row(runs)
        print(
            f"| {r['streams']:.0f} | {r['sustained']:g} "
            f"| {r['partial_p50_s']:.2f} / {spread(runs, 'partial_p95_s')} "
            f"| {r['commit_p50_s']:.2f} / {spread(runs, 'commit_p95_s')} "
            f"| {r['batch_mean']:.1f} / {r['batch_p95']:.0f} "
            f"| {r['engine_busy']:.2f} | {r['harness_cpu']:.2f} "
            f"| {r['gpu_util_mean']:.0f} % | {r['wer']:.3f} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "levels": [row for runs in levels for row in runs],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
