"""An ingress replica's decode requests, sent to the ASR deployment a few at a time.

Each call through a Serve handle costs the serving plane a fixed ~3-4 ms of the caller's CPU
and ~3 ms of the ASR replica's (router, task submit, the replica's request handling, the
answer), whatever the window's size (README, Benchmarks, stop 28); on a GPU the ASR replica's
share is spent on the one core that also runs the batch's host work.  With
``IngressConfig.decode_gather_s`` > 0, the requests this replica's streams issue within that
long of the first one go in one call (``ASRModel.transcribe_many``), where they join the
replica's batch one by one as before; each stream still gets its own answer or error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from deployments.transcript import DecodeRequest, Hypothesis

Send = Callable[[list[DecodeRequest]], Awaitable[Sequence[Hypothesis | BaseException]]]


class DecodeGather:
    """``decode`` waits at most ``window_s`` for other streams' requests, then one ``send``
    takes them all (at most ``max_requests``)."""

    def __init__(self, send: Send, window_s: float, max_requests: int = 64) -> None:
        self.send = send
        self.window_s = window_s
        self.max_requests = max_requests
        self._waiting: list[tuple[DecodeRequest, asyncio.Future[Hypothesis]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._calls: set[asyncio.Task[None]] = set()  # in flight (a task needs a reference)

    async def decode(self, request: DecodeRequest) -> Hypothesis:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Hypothesis] = loop.create_future()
        self._waiting.append((request, future))
        if len(self._waiting) >= self.max_requests:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group, self._waiting = self._waiting, []
        if not group:
            return
        task = asyncio.get_running_loop().create_task(self._call(group))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, group: list[tuple[DecodeRequest, asyncio.Future[Hypothesis]]]) -> None:
        try:
            results = await self.send([request for request, _ in group])
            if len(results) != len(group):
                raise RuntimeError(f"{len(group)} requests sent, {len(results)} answers")
        except asyncio.CancelledError:  # the replica is shutting down: no stream waits forever
            for _, future in group:
                future.cancel()
            raise
        except Exception as e:  # the call failed: each stream's decode raises it (and may retry)
            for _, future in group:
                if not future.done():  # a stream that went away cancelled its wait
                    future.set_exception(e)
            return
        for (_, future), result in zip(group, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
