"""Where the ASR replica runs a batch (``BatchConfig.decode_in``): on its event loop where the
engine is on a GPU (its host work holds the GIL), in a worker thread elsewhere.  What the
replica tells its engine of its load before each batch (``cpu_bf16_encoder: under_load``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from deployments.asr import ASRModel, BatchConfig
from deployments.config import EngineConfig
from deployments.transcript import DecodeRequest, Hypothesis


def replica_on(device: str) -> ASRModel:
    replica = object.__new__(ASRModel.func_or_class)  # no engine load: only the choice is tested
    replica.engine = SimpleNamespace(device=device)
    return replica  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("device", "decode_in", "in_loop"),
    [
        ("cuda", "auto", True),
        ("cuda:1", "auto", True),
        ("cpu", "auto", False),
        ("fake", "auto", False),
        ("cuda", "thread", False),
        ("cpu", "loop", True),
    ],
)
def test_decode_in_picks_the_loop_on_a_gpu_unless_told(device: str, decode_in: str, in_loop: bool) -> None:
    assert replica_on(device).in_loop(BatchConfig.model_validate({"decode_in": decode_in})) is in_loop


def test_decode_in_is_one_of_three() -> None:
    assert BatchConfig().decode_in == "auto"
    with pytest.raises(ValidationError, match="decode_in"):
        BatchConfig.model_validate({"decode_in": "process"})


class LoadedEngine:
    """Takes ``cost`` of (virtual) time per batch; switches "precision" at busy >= 0.5."""

    device = "cpu"

    def __init__(self, clock: list[float], cost: float) -> None:
        self.clock, self.cost, self.loads = clock, cost, list[float]()
        self.encoder_precision = "float32"

    def observe_load(self, busy: float) -> None:
        self.loads.append(busy)
        self.encoder_precision = "bfloat16" if busy >= 0.5 else "float32"

    def transcribe(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        self.clock[0] += self.cost
        return [Hypothesis([]) for _ in requests]


def test_the_replica_tells_its_engine_its_busy_fraction_before_each_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of 0.9 s (virtual clock), one per second: the busy fraction the engine is told
    climbs with them, and the decodes are counted by the precision each batch ran in."""
    clock = [100.0]
    monkeypatch.setattr("deployments.asr.time.perf_counter", lambda: clock[0])
    engine = LoadedEngine(clock, cost=0.9)

    class Replica(ASRModel.func_or_class):  # type: ignore[name-defined,misc]
        def load_engine(self, config: EngineConfig) -> LoadedEngine:
            return engine

    replica = Replica()

    batch = Replica.transcribe_batch.__wrapped__  # the batch itself: @serve.batch needs a replica

    async def run() -> None:
        for _ in range(5):
            await batch(replica, [DecodeRequest(np.zeros(1600, dtype=np.float32))])
            clock[0] += 0.1  # idle between batches

    asyncio.run(run())
    assert engine.loads == pytest.approx([0.0, 0.18, 0.36, 0.54, 0.72])  # 0.9 s per second, 5 s window
    assert replica.stats()["decodes_by_encoder"] == {"float32": 3, "bfloat16": 2}
