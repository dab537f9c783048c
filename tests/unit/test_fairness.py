"""Real-time streams first (deployments/fairness.py): decodes of streams ahead of real time
wait while real-time decodes are queued or running, one at a time."""

from __future__ import annotations

import asyncio

from deployments.fairness import RealTimeFirst


async def decode(gate: RealTimeFirst, name: str, ahead_s: float, log: list[str], done: asyncio.Event) -> None:
    async with gate.slot(ahead_s):
        log.append(f"{name} in")
        await done.wait()
        log.append(f"{name} out")


def test_ahead_of_real_time_waits_for_real_time_decodes_and_runs_alone() -> None:
    async def run() -> list[str]:
        gate, log = RealTimeFirst(ahead_s=10.0), []
        rt_done, flood_done = asyncio.Event(), asyncio.Event()
        realtime = asyncio.create_task(decode(gate, "rt", 0.5, log, rt_done))
        await asyncio.sleep(0)  # the real-time decode is in
        floods = [asyncio.create_task(decode(gate, f"f{i}", 60.0, log, flood_done)) for i in range(2)]
        late_rt = asyncio.create_task(decode(gate, "rt2", -3.0, log, rt_done))
        for _ in range(5):
            await asyncio.sleep(0)
        assert log == ["rt in", "rt2 in"], log  # neither flood decode started beside them
        rt_done.set()
        await asyncio.gather(realtime, late_rt)
        for _ in range(5):
            await asyncio.sleep(0)
        assert log[-1] == "f0 in" and "f1 in" not in log, log  # one at a time
        flood_done.set()
        await asyncio.gather(*floods)
        return log

    log = asyncio.run(run())
    assert log[-2:] == ["f1 in", "f1 out"], log


def test_real_time_decodes_never_wait_at_the_gate() -> None:
    async def run() -> list[str]:
        gate, log = RealTimeFirst(ahead_s=10.0), []
        flood_done, rt_done = asyncio.Event(), asyncio.Event()
        flood = asyncio.create_task(decode(gate, "f", 60.0, log, flood_done))
        await asyncio.sleep(0)
        rt = asyncio.create_task(decode(gate, "rt", 0.0, log, rt_done))
        await asyncio.sleep(0)
        snapshot = list(log)
        flood_done.set()
        rt_done.set()
        await asyncio.gather(flood, rt)
        return snapshot

    assert asyncio.run(run()) == ["f in", "rt in"]  # the running flood decode is not preempted
