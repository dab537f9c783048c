"""An ingress replica's decodes, gathered into calls (deployments/gather.py), on a scripted
ASR: which requests share a call, and that each stream gets its own answer or error."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.gather import DecodeGather
from deployments.transcript import DecodeRequest, Hypothesis, Word
from ingest.errors import ModelError


def request(i: int) -> DecodeRequest:
    return DecodeRequest(np.zeros(160, dtype=np.float32), offset=float(i))


class ScriptedASR:
    """Answers each request with a word naming its offset; offsets in ``bad`` get a
    ModelError as their answer; ``fail`` makes the whole call raise."""

    def __init__(self, bad: frozenset[int] = frozenset(), fail: Exception | None = None) -> None:
        self.calls: list[list[float]] = []
        self.bad, self.fail = bad, fail
        self.release = asyncio.Event()
        self.release.set()
        self.sent = asyncio.Event()

    async def send(self, requests: list[DecodeRequest]) -> list[Hypothesis | BaseException]:
        self.calls.append([r.offset for r in requests])
        self.sent.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [
            ModelError(f"bad window {r.offset:g}")
            if int(r.offset) in self.bad
            else Hypothesis([Word(f" w{r.offset:g}", r.offset, r.offset + 0.5)])
            for r in requests
        ]


def test_requests_within_the_window_share_one_call_and_get_their_own_answers() -> None:
    async def run() -> tuple[list[Hypothesis], ScriptedASR]:
        asr = ScriptedASR()
        gather = DecodeGather(asr.send, window_s=0.05)
        first = await asyncio.gather(*(gather.decode(request(i)) for i in range(5)))
        later = await gather.decode(request(9))  # after the first call went: a call of its own
        return [*first, later], asr

    answers, asr = asyncio.run(run())
    assert [h.text for h in answers] == ["w0", "w1", "w2", "w3", "w4", "w9"]
    assert asr.calls == [[0.0, 1.0, 2.0, 3.0, 4.0], [9.0]]
    assert (len(asr.calls), sum(map(len, asr.calls))) == (2, 6)


def test_a_full_call_goes_without_waiting_for_the_window() -> None:
    async def run() -> list[list[float]]:
        asr = ScriptedASR()
        gather = DecodeGather(asr.send, window_s=60.0, max_requests=3)
        # a minute's window: only the size limit can send these within the timeout
        await asyncio.wait_for(asyncio.gather(*(gather.decode(request(i)) for i in range(3))), timeout=5)
        return asr.calls

    assert asyncio.run(run()) == [[0.0, 1.0, 2.0]]


def test_one_streams_error_is_its_own_and_a_failed_call_fails_each_stream() -> None:
    async def run() -> tuple[list[Hypothesis | BaseException], list[Hypothesis | BaseException]]:
        gather = DecodeGather(ScriptedASR(bad=frozenset({1})).send, window_s=0.01)
        mixed = await asyncio.gather(*(gather.decode(request(i)) for i in range(3)), return_exceptions=True)
        down = DecodeGather(ScriptedASR(fail=ConnectionError("replica died")).send, window_s=0.01)
        failed = await asyncio.gather(*(down.decode(request(i)) for i in range(2)), return_exceptions=True)
        return mixed, failed

    mixed, failed = asyncio.run(run())
    assert isinstance(mixed[0], Hypothesis) and mixed[0].text == "w0"
    assert isinstance(mixed[1], ModelError) and "bad window 1" in str(mixed[1])
    assert isinstance(mixed[2], Hypothesis) and mixed[2].text == "w2"
    assert all(isinstance(f, ConnectionError) for f in failed)


def test_a_stream_that_stops_waiting_leaves_the_others_their_answers() -> None:
    async def run() -> tuple[Hypothesis, bool]:
        asr = ScriptedASR()
        asr.release.clear()  # the call is in flight until released
        gather = DecodeGather(asr.send, window_s=0.01)
        gone = asyncio.create_task(gather.decode(request(0)))
        stays = asyncio.create_task(gather.decode(request(1)))
        await asr.sent.wait()
        gone.cancel()
        asr.release.set()
        answer = await stays
        with pytest.raises(asyncio.CancelledError):
            await gone
        return answer, gone.cancelled()

    answer, cancelled = asyncio.run(run())
    assert answer.text == "w1" and cancelled
