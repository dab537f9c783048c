"""The transcript archive: every completed session's finals as rows of a Parquet dataset.

    {uri}/date=2026-11-26/{session_id}-0.parquet

One row per word (``rows: word``) or per final (``rows: final``); columns in :data:`SCHEMA`.
The dataset is hive-partitioned by the UTC date the session was created, and every session
is one file named by its id: replicas writing at once never touch the same file, and a
retried write replaces its own half-written file instead of adding a second one.  ``uri`` is
a local directory or any URI ``pyarrow.fs.FileSystem.from_uri`` opens (``file://``,
``s3://``, ``gs://``, ``hdfs://``...).

Writing never blocks a live stream: :meth:`ArchiveWriter.submit` only queues; one background
task per replica writes the queue in a worker thread (pyarrow's I/O is blocking), retries a
failed write with exponential backoff, and logs each failure with the session id.  A write
that fails after the last retry, or a session refused by a full queue, is logged at ERROR
and counted (``rayscribe_archive_writes{outcome="failed"|"dropped"}``): never lost silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field

from deployments import metrics
from deployments.store import SessionStore
from ingest import messages as m
from ingest.errors import ConfigError, StoreUnavailable

log = logging.getLogger("ray.serve")
Rows = Literal["word", "final"]
Sleep = Callable[[float], Awaitable[None]]

SCHEMA = pa.schema(
    [
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("channel", pa.int16(), nullable=False),  # 0 until multi-channel streams
        pa.field("seq", pa.int32(), nullable=False),  # the final's seq
        pa.field("word_index", pa.int32()),  # the word's place in its final; null for final rows
        pa.field("text", pa.string(), nullable=False),  # the word, or the final's text
        pa.field("start", pa.float64(), nullable=False),  # stream seconds
        pa.field("end", pa.float64(), nullable=False),
        pa.field("probability", pa.float64()),  # the word's; a final row: the mean of its words
        pa.field("key_id", pa.string()),  # the API key's id; null when auth is off
        pa.field("created", pa.timestamp("ms", tz="UTC"), nullable=False),  # the session's start
        pa.field("date", pa.string(), nullable=False),  # the partition: created's UTC date
    ]
)
PARTITIONING = ds.partitioning(pa.schema([SCHEMA.field("date")]), flavor="hive")


class ArchiveConfig(BaseModel):
    """``uri`` None: no archive (the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str | None = None  # a local directory, file:///..., s3://bucket/prefix, ...
    rows: Rows = "word"
    retries: int = Field(5, ge=0)  # attempts after the first
    backoff_s: float = Field(1.0, gt=0.0)  # before the first retry; doubles each time
    max_backoff_s: float = Field(60.0, gt=0.0)
    max_queued: int = Field(1024, ge=1)  # sessions waiting to be written, per replica
    # a resumable session whose client left without `close` is archived this far into its
    # store TTL (unless resumed first); each replica looks for such sessions every sweep_s
    abandoned_at: float = Field(0.8, gt=0.0, lt=1.0)
    sweep_s: float = Field(5.0, gt=0.0)


@dataclass(frozen=True)
class ArchivedSession:
    """A completed session, as the client received it."""

    session_id: str
    created: float  # unix seconds
    key_id: str | None
    finals: Sequence[m.Final]
    channel: int = 0


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and the dataset root in it; a plain path is a local directory."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
        raise ConfigError(f"archive uri {uri!r}: {e}") from e
    return filesystem, root


def to_table(session: ArchivedSession, rows: Rows) -> pa.Table:
    """The session's rows (finals in seq order), with :data:`SCHEMA`."""
    created = dt.datetime.fromtimestamp(session.created, dt.UTC)
    finals = sorted(session.finals, key=lambda f: f.seq)
    cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    items: list[tuple[int | None, str, float, float, float | None]]
    for final in finals:
        if rows == "final":
            probs = [w.probability for w in final.words]
            items = [(None, final.text, final.start, final.end, sum(probs) / len(probs) if probs else None)]
        else:
            items = [(i, w.word, w.start, w.end, w.probability) for i, w in enumerate(final.words)]
        for index, text, start, end, probability in items:
            cols["seq"].append(final.seq)
            cols["word_index"].append(index)
            cols["text"].append(text)
            cols["start"].append(start)
            cols["end"].append(end)
            cols["probability"].append(probability)
    n = len(cols["seq"])
    cols["session_id"] = [session.session_id] * n
    cols["channel"] = [session.channel] * n
    cols["key_id"] = [session.key_id] * n
    cols["created"] = [created] * n
    cols["date"] = [created.date().isoformat()] * n
    return pa.table(cols, schema=SCHEMA)


def write_table(table: pa.Table, session_id: str, filesystem: pafs.FileSystem, root: str) -> None:
    """One session's file (blocking: run it in a thread).  ``overwrite_or_ignore``: a retry
    replaces this session's file, other files in the partition are left alone."""
    ds.write_dataset(
        table,
        root,
        filesystem=filesystem,
        format="parquet",
        partitioning=PARTITIONING,
        basename_template=f"{session_id}-{{i}}.parquet",
        existing_data_behavior="overwrite_or_ignore",
        use_threads=False,
    )


def read_dataset(uri: str) -> pa.Table:
    """The whole archive (tests, notebooks): ``date`` comes back from the partition names."""
    filesystem, root = open_filesystem(uri)
    return ds.dataset(root, filesystem=filesystem, format="parquet", partitioning=PARTITIONING).to_table()


@dataclass
class ArchiveWriter:
    """Per ingress replica: a bounded queue of completed sessions and one task writing it."""

    config: ArchiveConfig
    sleep: Sleep = asyncio.sleep  # tests pass their own to act between attempts
    written: int = 0
    failed: int = 0
    _queue: asyncio.Queue[ArchivedSession] | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _fs: tuple[pafs.FileSystem, str] | None = field(default=None, init=False)
    _sweeper: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.config.uri is None:
            raise ConfigError("ArchiveWriter needs archive.uri")
        self._fs = open_filesystem(self.config.uri)  # a bad URI fails the replica's start

    def submit(self, session: ArchivedSession) -> None:
        """Queue a completed session; returns at once (call it from the event loop)."""
        if not session.finals:
            return  # nothing was said: no rows
        if self._queue is None:
            self._queue = asyncio.Queue(self.config.max_queued)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(self._queue))
        try:
            self._queue.put_nowait(session)
        except asyncio.QueueFull:
            self.failed += 1
            metrics.count_archive("dropped")
            log.error(
                "session %s: NOT archived: %d sessions already wait for the archive (is it failing?)",
                session.session_id,
                self.config.max_queued,
            )

    async def submit_ended(
        self, ended: ArchivedSession, store: SessionStore | None, closed: bool, epoch: int = 0
    ) -> None:
        """A connection ended: archive its session if that completed it, exactly once.

        Without durable state (``store`` None: protocol v1, or no store) the session is
        complete when its connection ends, whatever the cause (close, error, timeout, a client
        gone): nothing can resume it.  A durable (v1.1) session is complete only when its
        client ``closed`` it: a dropped, drained or failed connection leaves it resumable, and
        the one connection whose close the store accepted (a fenced write) archives every final
        the store holds, earlier connections' included.  A durable session left without
        ``close`` (at ``epoch``) is archived by whichever replica's sweep finds it due, unless a
        resume took it first (:meth:`sweep_abandoned`)."""
        if store is not None and not closed:
            await self._abandoned(ended, store, epoch)
            return
        finals = {f.seq: f for f in ended.finals}
        created = ended.created
        if store is not None:
            try:
                timeout = 2 * store.config.op_timeout_s
                stored_at, stored = await asyncio.wait_for(store.transcript(ended.session_id), timeout)
                created = stored_at or created
                finals = {f.seq: f for f in stored} | finals
            except Exception as e:  # unreachable, or an unreadable record: never lose the rest
                log.warning(
                    "session %s: the store's transcript is unavailable; archiving this connection's "
                    "%d finals only",
                    ended.session_id,
                    len(finals),
                    exc_info=not isinstance(e, StoreUnavailable | TimeoutError),
                )
        ordered = [finals[seq] for seq in sorted(finals)]
        self.submit(ArchivedSession(ended.session_id, created, ended.key_id, ordered, ended.channel))

    async def _abandoned(self, ended: ArchivedSession, store: SessionStore, epoch: int) -> None:
        due = time.time() + self.config.abandoned_at * store.config.session_ttl_s
        try:
            await store.mark_abandoned(ended.session_id, epoch, ended.key_id, due)
        except StoreUnavailable:
            log.error(
                "session %s: NOT archived: its client left without close while the store is unreachable",
                ended.session_id,
            )
            metrics.count_archive("dropped")
            return
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever(store))

    async def _sweep_forever(self, store: SessionStore) -> None:
        while True:
            await self.sleep(self.config.sweep_s)
            with contextlib.suppress(StoreUnavailable):  # logged by the store; the next sweep retries
                await self.sweep_abandoned(store)

    async def sweep_abandoned(self, store: SessionStore, now: float | None = None) -> int:
        """Archive every abandoned session that is due and was not resumed since; how many."""
        archived = 0
        for session_id, epoch, key_id in await store.claim_abandoned(time.time() if now is None else now):
            try:
                if not await store.still_abandoned(session_id, epoch):
                    continue  # resumed (its new connection archives it) or closed
                created, finals = await store.transcript(session_id)
            except StoreUnavailable:  # claimed, so no other sweep takes it: say so, never silently
                log.error(
                    "session %s: NOT archived: the store became unreachable during the sweep", session_id
                )
                metrics.count_archive("dropped")
                continue
            self.submit(ArchivedSession(session_id, created or time.time(), key_id, finals))
            archived += 1
        return archived

    async def join(self) -> None:
        """Until every queued session is written or given up (tests, replica shutdown)."""
        if self._queue is not None:
            await self._queue.join()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (bounded), then stop; what is left is logged, never dropped
        silently."""
        try:
            await asyncio.wait_for(self.join(), timeout_s)
        except TimeoutError:
            left = self._queue.qsize() if self._queue is not None else 0
            log.error("archive: %d session(s) NOT archived: the replica stopped first", left)
        for task in (self._task, self._sweeper):
            if task is not None:
                task.cancel()

    async def _run(self, queue: asyncio.Queue[ArchivedSession]) -> None:
        while True:
            session = await queue.get()
            try:
                await self._write(session)
            except Exception:  # a bug, not the filesystem: this session is lost, loudly
                self.failed += 1
                metrics.count_archive("failed")
                log.exception("session %s: NOT archived", session.session_id)
            finally:
                queue.task_done()

    async def _write(self, session: ArchivedSession) -> None:
        assert self._fs is not None
        filesystem, root = self._fs
        table = to_table(session, self.config.rows)
        delay = self.config.backoff_s
        for attempt in range(self.config.retries + 1):
            try:
                # pyarrow blocks: off the event loop, which serves every stream of this replica
                # a multi-channel session is a file per channel: {id}, {id}-c1, {id}-c2, ...
                name = session.session_id + (f"-c{session.channel}" if session.channel else "")
                await asyncio.to_thread(write_table, table, name, filesystem, root)
            except Exception as e:  # any failure of a filesystem: OSError, ArrowException, ...
                if attempt == self.config.retries:
                    self.failed += 1
                    metrics.count_archive("failed")
                    log.error(
                        "session %s: NOT archived after %d attempts (%d rows to %s)",
                        session.session_id,
                        attempt + 1,
                        table.num_rows,
                        self.config.uri,
                        exc_info=e,
                    )
                    return
                metrics.count_archive("retried")
                log.warning(
                    "session %s: archive write failed (%s: %s); retry %d/%d in %.1f s",
                    session.session_id,
                    type(e).__name__,
                    e,
                    attempt + 1,
                    self.config.retries,
                    delay,
                )
                await self.sleep(delay)
                delay = min(delay * 2, self.config.max_backoff_s)
            else:
                self.written += 1
                metrics.count_archive("written")
                return
