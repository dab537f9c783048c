"""One session's durable state: finals and progress written through :class:`SessionStore`.

While Redis answers, :meth:`SessionWriter.commit` persists each final before the caller sends it.
While Redis is down, commits are queued and coalesced (all pending finals + the newest progress
go in one write) and retried in the background with backoff; the stream keeps transcribing and
only resume is unavailable.  A heartbeat refreshes the TTL and notices fencing promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable

from deployments.store import NewSession, Progress, SessionStore
from ingest import messages as m
from ingest.errors import RayscribeError, ResumeConflict, SessionNotFound, StateLost, StoreUnavailable

log = logging.getLogger("ray.serve")
OnAck = Callable[[float], Awaitable[None]]
OnLost = Callable[[RayscribeError], Awaitable[None]]


class SessionWriter:
    def __init__(
        self,
        store: SessionStore,
        session_id: str,
        epoch: int,
        next_seq: int,
        progress: Progress,
        on_ack: OnAck,
        on_lost: OnLost,
        new: NewSession | None = None,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.epoch = epoch
        self.next_seq = next_seq  # first seq not yet durable
        self.pending: list[m.Final] = []
        # finals already written, kept to heal a Redis that lost its last writes in a crash
        # (appendfsync everysec may acknowledge a write before it reaches the AOF)
        self.written: deque[m.Final] = deque(maxlen=256)
        self.progress = progress
        self.acked = progress.offset
        self.on_ack = on_ack
        self.on_lost = on_lost
        self._new = new
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.dead = False  # fenced or expired: never write again
        self.fenced = False  # another connection resumed the session: it is theirs now

    def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat())

    @property
    def degraded(self) -> bool:
        return self._retry is not None and not self._retry.done()

    async def commit(self, finals: list[m.Final], progress: Progress) -> None:
        """Persist ``finals`` with ``progress`` (raises :class:`ResumeConflict` when fenced).
        While the store is down this only queues: the stream must not wait on Redis."""
        self.pending.extend(finals)
        self.progress = progress
        if self.dead or self.degraded:
            return
        try:
            await self._write()
        except StoreUnavailable:
            self._degrade()

    def _degrade(self) -> None:
        """Retry in the background; one retry at a time (a heartbeat and a commit can both
        fail while the other waits on the lock), so that :meth:`stop` can end it."""
        if not self.degraded:
            self._retry = asyncio.create_task(self._retry_until_written())

    async def _write(self) -> None:
        async with self._lock:
            if self.dead:
                return
            try:
                batch, progress = await self._sync()
            except (ResumeConflict, SessionNotFound) as e:
                self.dead = True
                if isinstance(e, ResumeConflict):
                    self.fenced = True
                    raise
                # Redis lost the keys (restarted without its AOF): keep streaming, no resume
                log.warning("session %s: state lost from the store; resume unavailable", self.session_id)
                return
            self._new = None
            del self.pending[: len(batch)]
            self.written.extend(batch)
        if progress.offset > self.acked:
            self.acked = progress.offset
            await self.on_ack(progress.offset)

    async def _sync(self, heal: bool = True) -> tuple[list[m.Final], Progress]:
        """One atomic write of the pending finals and the newest progress."""
        batch, progress = list(self.pending), self.progress
        try:
            self.next_seq = await self.store.sync(
                self.session_id, self.epoch, self.next_seq, batch, progress, self._new
            )
        except StateLost as e:
            lost = sorted({f.seq: f for f in self.written if f.seq >= e.next_seq}.items())
            if not heal or len(lost) != self.next_seq - e.next_seq:
                raise SessionNotFound(e.message) from e  # older than what we keep: give up
            log.warning("session %s: store lost finals from seq %d; rewriting", self.session_id, e.next_seq)
            self.pending[:0] = [f for _, f in lost]
            self.next_seq = e.next_seq
            return await self._sync(heal=False)
        return batch, progress

    async def _retry_until_written(self) -> None:
        delay = 0.2
        while not self.dead:
            await asyncio.sleep(delay * (0.5 + random.random()))
            try:
                await self._write()
                return
            except StoreUnavailable:
                delay = min(delay * 2, 5.0)
            except ResumeConflict as e:
                await self.on_lost(e)
                return

    async def _beat(self) -> None:
        while not self.dead:
            await asyncio.sleep(self.store.config.heartbeat_s)
            if self.degraded:
                continue
            try:
                await self._write()
            except StoreUnavailable:
                self._degrade()
            except ResumeConflict as e:
                await self.on_lost(e)
                return

    async def stop(self) -> None:
        """The connection is gone: one last attempt to persist what is pending."""
        tasks = [t for t in (self._heartbeat, self._retry) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            # bounded: a task stuck in a Redis call must not hold the socket's close hostage
            _, stuck = await asyncio.wait(tasks, timeout=2 * self.store.config.op_timeout_s)
            if stuck:
                log.warning("session %s: %d writer task(s) did not stop", self.session_id, len(stuck))
        # a session never written yet (ended before its first final or heartbeat) is created
        # now: its client already holds a resume token
        if (self.pending or self._new is not None) and not self.dead:
            with contextlib.suppress(StoreUnavailable, ResumeConflict, TimeoutError):
                await asyncio.wait_for(self._write(), timeout=2 * self.store.config.op_timeout_s)

    async def close(self) -> bool:
        """The client closed the stream: persist the last finals, then mark it closed.  False:
        another connection holds the session (fenced), so this one did not end it."""
        await self.stop()
        if not self.dead:
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                closed = await asyncio.wait_for(
                    self.store.close(self.session_id, self.epoch), 2 * self.store.config.op_timeout_s
                )
                self.fenced = self.fenced or not closed
        self.dead = True
        return not self.fenced
