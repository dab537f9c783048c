"""End to end: the real app with the transcript archive on (a local directory) archives each
stream when it completes; the dataset, read back with pyarrow, holds exactly the finals the
client received, word by word."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from deployments.archive import read_dataset
from ingest import messages as m
from ingest.cli import SAMPLE_WAV
from ingest.client import StreamOptions, StreamResult, stream_file
from ingest.livestreams import wait_until
from tests.e2e.app import deploy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def archive_app(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("archive")
    yield deploy(ingress={"archive": {"uri": str(root), "retries": 2, "backoff_s": 0.2}}), root
    deploy()  # the tier's default app for the modules after this one


def archived(root: Path, session_id: str) -> list[dict[str, object]] | None:
    """The session's rows, or None while its file is absent or still being written."""
    if not list(root.rglob(f"{session_id}-*.parquet")):
        return None
    try:
        rows = read_dataset(str(root)).to_pylist()
    except (OSError, pa.ArrowInvalid):  # a file of another session half written
        return None
    return [r for r in rows if r["session_id"] == session_id]


def expected(finals: list[m.Final]) -> list[tuple[object, ...]]:
    return [(f.seq, i, w.word, w.start, w.end, w.probability) for f in finals for i, w in enumerate(f.words)]


def test_streams_are_archived_as_the_client_received_them(archive_app: tuple[str, Path]) -> None:
    url, root = archive_app

    async def run() -> tuple[list[StreamResult], list[list[dict[str, object]]]]:
        # v1.1 (durable: archived by the close, from the store) and v1 (by its connection's end)
        results = await asyncio.gather(
            stream_file(url, SAMPLE_WAV, StreamOptions(speed=2.0)),
            stream_file(url, SAMPLE_WAV, StreamOptions(speed=2.0, resume=False)),
        )
        ids = [r.session_id or "" for r in results]
        words = [sum(len(f.words) for f in r.finals) for r in results]

        def complete() -> bool:
            return all(len(archived(root, i) or []) == n for i, n in zip(ids, words, strict=True))

        await wait_until(complete, 30.0, "both sessions in the archive")
        return list(results), [archived(root, i) or [] for i in ids]

    results, archives = asyncio.run(run())
    for result, rows in zip(results, archives, strict=True):
        assert result.error is None and result.close_code == 1000 and result.finals
        got = sorted(rows, key=lambda r: (r["seq"], r["word_index"]))  # type: ignore[arg-type, return-value]
        assert [
            (r["seq"], r["word_index"], r["text"], r["start"], r["end"], r["probability"]) for r in got
        ] == (expected(result.finals))
        assert {r["channel"] for r in got} == {0} and {r["key_id"] for r in got} == {None}  # auth off
        assert len({r["created"] for r in got}) == 1 and len({r["date"] for r in got}) == 1
        assert len(list(root.rglob(f"{result.session_id}-*.parquet"))) == 1
