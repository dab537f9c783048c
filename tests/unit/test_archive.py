"""The transcript archive (deployments/archive.py): real pyarrow on a temporary directory, read
back with pyarrow.dataset and compared with the finals; failing filesystems; the event loop
stays free while a write runs; which connection of a session archives it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from deployments import archive as archive_mod
from deployments import metrics
from deployments.archive import ArchiveConfig, ArchivedSession, ArchiveWriter, read_dataset
from deployments.session import StreamSession
from ingest import messages as m
from ingest.errors import ConfigError
from ingest.protocol import Limits
from tests.unit.test_session import START, ScriptedSocket, audio_frames, counting_decoder
from tests.unit.test_session_resume import (
    CLOSE,
    POLICY,
    START_V1_1,
    WAIT_S,
    LiveSocket,
    expected_words,
    resume_msg,
)
from tests.unit.test_session_resume import counting_decoder as resume_decoder

if TYPE_CHECKING:
    from tests.unit.conftest import StoreFactory

CREATED = dt.datetime(2026, 11, 26, 23, 59, 30, tzinfo=dt.UTC).timestamp()


def final(seq: int, *words: tuple[str, float, float, float]) -> m.Final:
    timings = [m.WordTiming(word=w, start=s, end=e, probability=p) for w, s, e, p in words]
    return m.Final(
        seq=seq, text=" ".join(w for w, *_ in words), start=words[0][1], end=words[-1][2], words=timings
    )


FINALS = [
    final(0, ("And", 0.0, 0.3, 0.9), ("so,", 0.3, 1.04, 0.7)),
    final(1, ("my", 1.04, 1.3, 0.5), ("fellow", 1.3, 1.74, 1.0), ("Americans,", 1.74, 2.5, 0.8)),
]


class Counted:
    """Stands in for the metric objects: counts by name and tags."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], float] = {}

    def instruments(self) -> dict[str, Any]:
        counted = self

        class Metric:
            def __init__(self, name: str) -> None:
                self.name = name

            def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
                key = (self.name, json.dumps(tags, sort_keys=True))
                counted.counts[key] = counted.counts.get(key, 0) + value

            def set(self, value: float, tags: dict[str, str] | None = None) -> None: ...

            def observe(self, value: float, tags: dict[str, str] | None = None) -> None: ...

        return {d.name: Metric(d.name) for d in metrics.DEFINITIONS}

    def archive(self, outcome: str) -> float:
        return self.counts.get(("rayscribe_archive_writes", json.dumps({"outcome": outcome})), 0)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counted:
    c = Counted()
    monkeypatch.setattr(metrics, "instruments", c.instruments)
    return c


def writer(root: Path | str, **config: Any) -> ArchiveWriter:
    return ArchiveWriter(ArchiveConfig(uri=str(root), **config))


def write(w: ArchiveWriter, *sessions: ArchivedSession) -> None:
    async def main() -> None:
        for s in sessions:
            w.submit(s)
        await asyncio.wait_for(w.join(), 30)

    asyncio.run(main())


def rows(uri: str | Path) -> list[dict[str, Any]]:
    table = read_dataset(str(uri))
    return sorted(table.to_pylist(), key=lambda r: (r["session_id"], r["seq"], r["word_index"] or 0))


def test_word_rows_read_back_equal_the_finals(tmp_path: Path, counted: Counted) -> None:
    w = writer(tmp_path)
    write(w, ArchivedSession("sess-a", CREATED, "team-a", FINALS))
    # hive partition by the session's UTC creation date; one file named by the session
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")] == [
        "date=2026-11-26/sess-a-0.parquet"
    ]
    got = rows(tmp_path)
    want = [
        (f.seq, i, wt.word, wt.start, wt.end, wt.probability) for f in FINALS for i, wt in enumerate(f.words)
    ]
    assert [
        (r["seq"], r["word_index"], r["text"], r["start"], r["end"], r["probability"]) for r in got
    ] == want
    assert {r["session_id"] for r in got} == {"sess-a"} and {r["channel"] for r in got} == {0}
    assert {r["key_id"] for r in got} == {"team-a"} and {r["date"] for r in got} == {"2026-11-26"}
    assert {r["created"] for r in got} == {dt.datetime.fromtimestamp(CREATED, dt.UTC)}
    assert w.written == 1 and counted.archive("written") == 1
    # the files carry the schema (the partition column comes from the path)
    schema = ds.dataset(tmp_path, format="parquet").schema
    assert schema.field("created").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("seq").type == pa.int32()


def test_final_rows_and_a_null_key(tmp_path: Path) -> None:
    write(writer(tmp_path, rows="final"), ArchivedSession("sess-b", CREATED, None, list(reversed(FINALS))))
    got = rows(tmp_path)
    assert [(r["seq"], r["word_index"], r["text"], r["start"], r["end"]) for r in got] == [
        (f.seq, None, f.text, f.start, f.end) for f in FINALS
    ]
    assert [r["probability"] for r in got] == pytest.approx([0.8, 2.3 / 3])  # the words' mean
    assert {r["key_id"] for r in got} == {None}


def test_sessions_never_clobber_each_other_and_a_rewrite_replaces_its_own_file(tmp_path: Path) -> None:
    later = CREATED + 3600  # the next UTC day
    first = [
        ArchivedSession("s1", CREATED, None, FINALS),
        ArchivedSession("s2", CREATED, None, FINALS[:1]),
        ArchivedSession("s3", later, None, FINALS[1:]),
    ]

    async def main() -> None:
        w = writer(f"file://{tmp_path}")  # a URI works as well as a path
        for s in first:
            w.submit(s)
        await w.join()
        w.submit(ArchivedSession("s2", CREATED, None, FINALS))  # written again: replaced, not doubled
        await w.join()

    asyncio.run(main())
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "date=2026-11-26/s1-0.parquet",
        "date=2026-11-26/s2-0.parquet",
        "date=2026-11-27/s3-0.parquet",
    ]
    got = rows(tmp_path)
    per_session = {s: [r["text"] for r in got if r["session_id"] == s] for s in ("s1", "s2", "s3")}
    assert per_session == {
        "s1": ["And", "so,", "my", "fellow", "Americans,"],
        "s2": ["And", "so,", "my", "fellow", "Americans,"],
        "s3": ["my", "fellow", "Americans,"],
    }


def test_a_session_without_finals_writes_nothing(tmp_path: Path) -> None:
    w = writer(tmp_path)
    write(w, ArchivedSession("empty", CREATED, None, []))
    assert list(tmp_path.iterdir()) == [] and w.written == 0


def test_a_bad_uri_fails_the_config() -> None:
    with pytest.raises(ConfigError):
        writer("nosuchscheme://bucket/x")


def test_a_failed_write_is_retried_then_logged_and_counted(
    tmp_path: Path, counted: Counted, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "archive"
    blocker.write_text("a file where the dataset's directory should be")
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    w = ArchiveWriter(ArchiveConfig(uri=str(blocker), retries=3, backoff_s=0.5, max_backoff_s=1.0), sleep)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        write(w, ArchivedSession("doomed", CREATED, None, FINALS))
    assert waits == [0.5, 1.0, 1.0]  # exponential, capped
    assert w.written == 0 and w.failed == 1
    assert counted.archive("retried") == 3 and counted.archive("failed") == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert (
        len(errors) == 1 and "doomed" in errors[0].getMessage() and "NOT archived" in errors[0].getMessage()
    )
    assert errors[0].exc_info is not None  # the cause, with its traceback
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("doomed" in x for x in warnings)


def test_a_write_that_fails_once_succeeds_on_retry(tmp_path: Path, counted: Counted) -> None:
    root = tmp_path / "archive"
    root.write_text("in the way")

    async def sleep(s: float) -> None:
        root.unlink()  # the filesystem recovers before the retry

    w = ArchiveWriter(ArchiveConfig(uri=str(root), retries=2), sleep)
    write(w, ArchivedSession("late", CREATED, None, FINALS))
    assert counted.archive("retried") == 1 and counted.archive("written") == 1 and w.failed == 0
    assert len(rows(root)) == 5


def test_the_write_runs_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write blocks until the event loop has run on: had it run on the loop, it would wait
    for itself (and time out)."""
    loop_ran = threading.Event()
    threads: list[int] = []
    real = archive_mod.write_table

    def slow_write(*args: Any) -> None:
        threads.append(threading.get_ident())
        assert loop_ran.wait(10), "the event loop did not run while the write was in progress"
        real(*args)

    monkeypatch.setattr(archive_mod, "write_table", slow_write)

    async def main() -> None:
        w = writer(tmp_path)
        w.submit(ArchivedSession("bg", CREATED, None, FINALS))
        for _ in range(3):  # the stream goes on: the loop turns while the write waits
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        loop_ran.set()
        await asyncio.wait_for(w.join(), 10)
        assert w.written == 1

    asyncio.run(main())
    assert threads and threads[0] != threading.get_ident()
    assert len(rows(tmp_path)) == 5


def test_a_full_queue_drops_loudly(
    tmp_path: Path, counted: Counted, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real = archive_mod.write_table

    def gated(*args: Any) -> None:
        gate.wait(10)
        real(*args)

    monkeypatch.setattr(archive_mod, "write_table", gated)

    async def main() -> ArchiveWriter:
        w = writer(tmp_path, max_queued=1)
        w.submit(ArchivedSession("first", CREATED, None, FINALS))  # taken by the writer task
        await asyncio.sleep(0.05)
        w.submit(ArchivedSession("second", CREATED, None, FINALS))  # queued
        w.submit(ArchivedSession("third", CREATED, None, FINALS))  # no room
        gate.set()
        await asyncio.wait_for(w.join(), 10)
        return w

    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        w = asyncio.run(main())
    assert w.written == 2 and w.failed == 1 and counted.archive("dropped") == 1
    assert any("third" in r.getMessage() and "NOT archived" in r.getMessage() for r in caplog.records)
    assert {r["session_id"] for r in rows(tmp_path)} == {"first", "second"}


# --- which connection archives a session ------------------------------------------------


def sent_finals(sent: list[dict[str, Any]]) -> list[m.Final]:
    return [m.Final.model_validate(x) for x in sent if x["type"] == "final"]


def assert_archive_equals(root: Path, session_id: str, finals: list[m.Final], key_id: str | None) -> None:
    got = [r for r in rows(root) if r["session_id"] == session_id]
    assert [(r["seq"], r["word_index"], r["text"], r["start"], r["end"], r["probability"]) for r in got] == [
        (f.seq, i, w.word, w.start, w.end, w.probability) for f in finals for i, w in enumerate(f.words)
    ]
    assert {r["key_id"] for r in got} == {key_id}
    assert len(list(root.rglob(f"{session_id}-*.parquet"))) == 1


class FinalWatch(ScriptedSocket):
    """A scripted client that says when the server sent it a final."""

    def __init__(self, incoming: list[str | bytes]) -> None:
        super().__init__(incoming)
        self.got_final = asyncio.Event()

    async def send_text(self, text: str) -> None:
        await super().send_text(text)
        if self.sent[-1]["type"] == "final":
            self.got_final.set()


@pytest.mark.parametrize("ending", ["close", "disconnect"])
def test_a_v1_session_is_archived_when_its_connection_ends(tmp_path: Path, ending: str) -> None:
    """v1 cannot be resumed: a close and a client gone mid-stream both complete it."""
    tail = ['{"type": "close"}'] if ending == "close" else []

    async def main() -> FinalWatch:
        w = writer(tmp_path)
        sock = FinalWatch([START, *audio_frames(4.0), *tail])
        session = StreamSession(
            "v1-" + ending, sock, counting_decoder, POLICY, Limits(), None, None, "team-a", w
        )
        task = asyncio.create_task(session.run())
        if ending == "disconnect":
            await asyncio.wait_for(sock.drained.wait(), WAIT_S)
            await asyncio.wait_for(sock.got_final.wait(), WAIT_S)  # a decode of what was sent
            sock.gone.set()
        await asyncio.wait_for(task, WAIT_S)
        await asyncio.wait_for(w.join(), 10)
        return sock

    sock = asyncio.run(main())
    finals = sent_finals(sock.sent)
    assert finals
    assert_archive_equals(tmp_path, "v1-" + ending, finals, "team-a")


def test_a_resumed_session_is_archived_once_when_it_is_closed(tmp_path: Path, store: StoreFactory) -> None:
    """The dropped connection archives nothing (the session is resumable); the connection that
    closes it archives every final, the ones only the first connection sent included."""
    sid = uuid.uuid4().hex

    async def main() -> tuple[list[m.Final], ArchiveWriter]:
        w = writer(tmp_path)
        async with store() as s:
            a = LiveSocket()
            task_a = asyncio.create_task(
                StreamSession(sid, a, resume_decoder, POLICY, Limits(), s, archive=w).run()
            )
            a.push(START_V1_1)
            await a.feed(0.0, 4.0)
            a_finals = sent_finals(a.sent)
            a.disconnect()
            await asyncio.wait_for(task_a, WAIT_S)
            await w.join()
            assert not list(tmp_path.rglob("*.parquet")), "a resumable session was archived"

            b = LiveSocket()
            task_b = asyncio.create_task(
                StreamSession(uuid.uuid4().hex, b, resume_decoder, POLICY, Limits(), s, archive=w).run()
            )
            b.push(resume_msg(sid, a.sent[0]["resume_token"], last_seq=len(a_finals) - 1))
            await b.wait_for(lambda: bool(b.sent), "resumed")
            await b.feed(b.sent[0]["audio_offset"], 8.0)
            b.push(CLOSE)
            await asyncio.wait_for(task_b, WAIT_S)
            await asyncio.wait_for(w.join(), 10)
            # the first connection's drop marked it abandoned; the resume took it: no sweep archives it
            assert await w.sweep_abandoned(s, now=time.time() + 3600) == 0
            return a_finals + sent_finals(b.sent), w

    client_view, w = asyncio.run(main())
    assert [f.seq for f in client_view] == list(range(len(client_view)))
    assert [x.word for f in client_view for x in f.words] == expected_words(8.0)
    assert_archive_equals(tmp_path, sid, client_view, None)
    assert w.written == 1


def test_a_session_left_without_close_is_archived_once_by_one_sweep(
    tmp_path: Path, store: StoreFactory
) -> None:
    """A v1.1 client that drops and never resumes: before the session expires, one replica's
    sweep (of two, racing) archives every final the store holds; the mark is taken once."""
    sid = uuid.uuid4().hex

    async def main() -> tuple[list[m.Final], list[int], ArchiveWriter]:
        w, other = writer(tmp_path), writer(tmp_path)
        async with store() as s:
            a = LiveSocket()
            task = asyncio.create_task(
                StreamSession(sid, a, resume_decoder, POLICY, Limits(), s, archive=w).run()
            )
            a.push(START_V1_1)
            await a.feed(0.0, 4.0)
            a.disconnect()
            await asyncio.wait_for(task, WAIT_S)
            assert await w.sweep_abandoned(s) == 0  # not due yet: the client may still resume
            later = time.time() + s.config.session_ttl_s
            counts = await asyncio.gather(
                w.sweep_abandoned(s, now=later), other.sweep_abandoned(s, now=later)
            )
            await asyncio.wait_for(w.join(), 10)
            await asyncio.wait_for(other.join(), 10)
            await w.aclose()
            return sent_finals(a.sent), sorted(counts), w

    client_view, counts, w = asyncio.run(main())
    assert counts == [0, 1] and client_view
    assert_archive_equals(tmp_path, sid, client_view, None)


def test_an_unexpected_error_loses_the_session_loudly_and_the_writer_goes_on(
    tmp_path: Path, counted: Counted, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = archive_mod.to_table

    def broken(session: ArchivedSession, rows: Any) -> pa.Table:
        if session.session_id == "bad":
            raise ValueError("a bug")
        return real(session, rows)

    monkeypatch.setattr(archive_mod, "to_table", broken)
    w = writer(tmp_path)
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        write(
            w, ArchivedSession("bad", CREATED, None, FINALS), ArchivedSession("good", CREATED, None, FINALS)
        )
    assert w.failed == 1 and w.written == 1 and counted.archive("failed") == 1
    assert any("bad" in r.getMessage() and r.exc_info for r in caplog.records)
    assert {r["session_id"] for r in rows(tmp_path)} == {"good"}
