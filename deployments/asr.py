"""The ASR deployment: a Whisper replica that batches decode requests across streams.

No sockets, no Redis: it takes :class:`DecodeRequest` and returns :class:`Hypothesis`.
Where a batch runs (``BatchConfig.decode_in``) decides whether requests keep arriving while it
does: on CPU the model runs in a worker thread, whose torch kernels release the GIL, so the
replica's event loop keeps accepting requests (which is what lets ``@serve.batch`` gather
them).  On a GPU the engine's host work (kernel launches, the token loop, in Python) holds the
GIL instead, and a worker thread would starve the loop: through Serve, 200 streams on one
H200 decoded batches of ~2 rows while requests waited ~3 s to be let in (README, GPU sixth
pass).  There it runs on the event loop: requests queue in Ray meanwhile and the next batch
takes them all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from deployments import metrics
from deployments.autoscaling import BUSY, LoadWindow
from deployments.config import EngineConfig
from deployments.fairness import RealTimeFirst
from deployments.transcript import DecodeRequest, Hypothesis

log = logging.getLogger("ray.serve")


class BatchConfig(BaseModel):
    """``user_config`` of the ASR deployment; changing it retunes batching live."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(8, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.05, ge=0.0, le=5.0)
    # where a batch runs: a worker thread, the replica's event loop, or auto (the loop where the
    # engine is on a GPU, else a thread; module docstring)
    decode_in: Literal["auto", "thread", "loop"] = "auto"


class Engine(Protocol):
    """What the replica needs of a model (the Whisper engine; stand-ins in the tests)."""

    device: Any

    @property
    def encoder_precision(self) -> str: ...

    def observe_load(self, busy: float) -> None: ...

    def transcribe(self, requests: list[DecodeRequest]) -> list[Hypothesis]: ...


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},
    max_ongoing_requests=32,
    health_check_period_s=5,
)
class ASRModel:
    def __init__(self, engine: dict[str, Any] | None = None) -> None:
        self.engine = self.load_engine(EngineConfig.model_validate(engine or {}))
        self.batches: list[int] = []  # recent batch sizes, for tests and stats
        # requests decoded since start, by the encoder's precision (under_load switches it);
        # their sum is the stats' decodes (the serving bench's decodes per stream-second)
        self.decoded_by: dict[str, int] = {}
        self.load = LoadWindow()  # what the autoscaling policy sees (deployments/autoscaling.py)
        self.fairness = RealTimeFirst()
        self.decode_in_loop = self.in_loop(BatchConfig())
        self.calls = 0  # calls taken (a transcribe_many call is one, whatever its requests)

    def load_engine(self, config: EngineConfig) -> Engine:
        """The model (:class:`Engine`; the cluster tier swaps in a stand-in here)."""
        from deployments.whisper.engine import WhisperEngine  # heavy: torch

        return WhisperEngine(config)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = BatchConfig.model_validate(user_config)
        self.transcribe_batch.set_max_batch_size(cfg.max_batch_size)  # type: ignore[attr-defined]
        self.transcribe_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)  # type: ignore[attr-defined]
        self.decode_in_loop = self.in_loop(cfg)

    def in_loop(self, cfg: BatchConfig) -> bool:
        if cfg.decode_in == "auto":
            return str(self.engine.device).startswith("cuda")
        return cfg.decode_in == "loop"

    async def transcribe(self, request: DecodeRequest) -> Hypothesis:
        """One stream's decode, batched with others' (streams at real-time pace first)."""
        self.calls += 1
        return await self._decode(request)

    async def transcribe_many(self, requests: list[DecodeRequest]) -> list[Hypothesis | BaseException]:
        """Several streams' decodes in one call (deployments/gather.py): each joins the batch
        as :meth:`transcribe`'s would; a stream's error is its own answer, not the call's."""
        self.calls += 1
        results = await asyncio.gather(*(self._decode(r) for r in requests), return_exceptions=True)
        return list(results)

    async def _decode(self, request: DecodeRequest) -> Hypothesis:
        request.check()
        async with self.fairness.slot(request.ahead_s):
            result: Hypothesis = await self.transcribe_batch(request)
            return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def transcribe_batch(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        started = time.perf_counter()
        metrics.batch_started(requests)
        now = time.time()
        self.engine.observe_load(self.load.stats(started)[BUSY])
        precision = self.engine.encoder_precision
        self.load.batch_started(started, [now - r.issued_at for r in requests if r.issued_at > 0])
        try:
            if self.decode_in_loop:  # blocks the loop by design: requests queue in Ray meanwhile
                results: list[Hypothesis] = self.engine.transcribe(requests)
            else:
                results = await asyncio.to_thread(self.engine.transcribe, requests)
        finally:
            self.load.batch_done(time.perf_counter())
        took = time.perf_counter() - started
        metrics.batch_done(len(requests), took, precision)
        self.batches = [*self.batches[-99:], len(requests)]
        self.decoded_by[precision] = self.decoded_by.get(precision, 0) + len(requests)
        busy = self.load.stats(time.perf_counter())[BUSY]
        log.debug("decoded batch of %d in %.3f s, busy %.2f", len(requests), took, busy)
        return [dataclasses.replace(h, engine_busy=busy) for h in results]

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve calls this every ``look_back_period_s / 5`` for the custom autoscaling policy."""
        return self.load.stats(time.perf_counter())

    def node_id(self) -> str:
        """The Ray node this replica runs on (placement checks, operators)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def stats(self) -> dict[str, Any]:
        import torch

        return {
            "device": str(self.engine.device),
            "decode_in": "loop" if self.decode_in_loop else "thread",
            "threads": torch.get_num_threads(),
            "batches": list(self.batches),
            "decodes": sum(self.decoded_by.values()),
            "calls": self.calls,
            "decodes_by_encoder": dict(self.decoded_by),
        }
