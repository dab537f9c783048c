"""The ASR deployment: a Whisper replica that batches decode requests across streams.

No sockets, no Redis: it takes :class:`DecodeRequest` and returns :class:`Hypothesis`.
The model runs in a worker thread so the replica's event loop keeps accepting requests
(which is what lets ``@serve.batch`` gather them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from deployments import metrics
from deployments.config import EngineConfig
from deployments.transcript import DecodeRequest, Hypothesis

log = logging.getLogger("ray.serve")


class BatchConfig(BaseModel):
    """``user_config`` of the ASR deployment; changing it retunes batching live."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(8, ge=1, le=64)
    batch_wait_timeout_s: float = Field(0.05, ge=0.0, le=5.0)


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},
    max_ongoing_requests=32,
    health_check_period_s=5,
)
class ASRModel:
    def __init__(self, engine: dict[str, Any] | None = None) -> None:
        from deployments.whisper.engine import WhisperEngine  # heavy: torch

        self.engine = WhisperEngine(EngineConfig.model_validate(engine or {}))
        self.batches: list[int] = []  # recent batch sizes, for tests and stats

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = BatchConfig.model_validate(user_config)
        self.transcribe.set_max_batch_size(cfg.max_batch_size)  # type: ignore[attr-defined]
        self.transcribe.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def transcribe(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        started = time.perf_counter()
        metrics.batch_started(requests)
        results = await asyncio.to_thread(self.engine.transcribe, requests)
        metrics.batch_done(len(requests), time.perf_counter() - started)
        self.batches = [*self.batches[-99:], len(requests)]
        log.debug("decoded batch of %d in %.3f s", len(requests), time.perf_counter() - started)
        return results

    def stats(self) -> dict[str, Any]:
        import torch

        return {
            "device": str(self.engine.device),
            "threads": torch.get_num_threads(),
            "batches": list(self.batches),
        }
