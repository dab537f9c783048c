"""Sessions survive failures: real Ray Serve, real redis-server, real WebSockets, real Whisper.

Faults are real: ``ray.kill`` of replica actors, a Serve redeploy, SIGKILL of redis-server.
Each stream is two evalset utterances back to back (~20 s) at real-time pace, four at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from websockets.asyncio.client import connect

from cluster.faults import kill_replica, owner_of, replica_names
from cluster.redis_server import EmbeddedRedis
from ingest import messages as m
from ingest.client import StreamOptions, StreamResult
from ingest.livestreams import LiveStreams, load_audio, wait_until
from ingest.wer import normalize, wer
from tests.e2e.app import deploy

pytestmark = [pytest.mark.e2e, pytest.mark.faults]
STREAMS = 4
OPTS = StreamOptions(speed=1.0)


def clip_pairs(evalset: Path) -> tuple[list[np.ndarray], list[str]]:
    rows = [json.loads(x) for x in (evalset / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if 8.0 <= float(r["duration_s"]) <= 12.0][: 2 * STREAMS]
    audio = load_audio([evalset / str(r["audio"]) for r in rows])
    gap = np.zeros(8000, np.float32)
    pairs = [np.concatenate([audio[2 * i], gap, audio[2 * i + 1]]) for i in range(STREAMS)]
    refs = [f"{rows[2 * i]['text']} {rows[2 * i + 1]['text']}" for i in range(STREAMS)]
    return pairs, refs


@pytest.fixture(scope="module")
def clips(evalset: Path) -> tuple[list[np.ndarray], list[str]]:
    return clip_pairs(evalset)


@pytest.fixture(scope="module")
def baseline(server_url: str, clips: tuple[list[np.ndarray], list[str]]) -> list[StreamResult]:
    """The same four streams with no fault: the bound every faulted run is held to."""
    results = asyncio.run(LiveStreams(server_url, clips[0], OPTS).run())
    for r in results:
        assert r.error is None and not r.resumes
    return results


def check_session(result: StreamResult) -> None:
    """One unbroken session: finals 0..n-1 exactly once, word times increasing across seams."""
    assert result.error is None, result.error
    assert result.summary is not None and result.close_code == 1000
    assert [f.seq for f in result.finals] == list(range(len(result.finals)))
    words = [w for f in result.finals for w in f.words]
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(a.end <= b.start + 0.5 for a, b in zip(words, words[1:], strict=False))
    assert result.summary.words == len(words) and result.summary.finals == len(result.finals)


def word_diff(a: str, b: str) -> int:
    """Word edits between two transcripts."""
    return round(wer([a], [b]) * max(1, len(normalize(a))))


def check_against_baseline(results: list[StreamResult], base: list[StreamResult], refs: list[str]) -> None:
    for r, b in zip(results, base, strict=True):
        check_session(r)
        # a resume re-decodes only the uncommitted tail from the same audio: the text may
        # differ by a few words at the seam, never by a lost or repeated phrase.  Settled
        # words (settle_s) are one decode's, whose window depends on when it ran: a fault
        # moves the windows and can change a few words elsewhere too ("as your books
        # consist principally" / "as picture books, and the latest principle": 5 edits,
        # the same length), so the length is held tighter than the words
        assert abs(len(normalize(b.text)) - len(normalize(r.text))) <= 3, (b.text, r.text)
        assert word_diff(b.text, r.text) <= 6, (b.text, r.text)
    assert wer(refs, [r.text for r in results]) <= wer(refs, [b.text for b in base]) + 0.03


@pytest.mark.parametrize("gather_s", [0.0, 0.05], ids=["a-call-per-decode", "gathered-calls"])
def test_asr_replica_killed_with_two_replicas(
    server_url: str, clips: Any, baseline: Any, gather_s: float
) -> None:
    # gathered: a call carrying several streams' decodes dies with the replica, and each of
    # them is retried on its own (deployments/gather.py)
    deploy(asr_replicas=2, ingress={"decode_gather_s": gather_s})
    try:
        before = replica_names("ASRModel")
        assert len(before) == 2

        async def fault(streams: LiveStreams) -> None:
            await wait_until(lambda: streams.all_have(1), 30, "a final on every stream")
            await asyncio.to_thread(kill_replica, before[0])

        results = asyncio.run(LiveStreams(server_url, clips[0], OPTS).run(fault))
        check_against_baseline(results, baseline, clips[1])
        assert before[0] not in replica_names("ASRModel")
    finally:
        deploy(asr_replicas=1)  # and the tier's ingress settings


def test_lone_asr_replica_killed_streams_wait_for_its_restart(
    server_url: str, clips: Any, baseline: Any
) -> None:
    [only] = replica_names("ASRModel")

    async def fault(streams: LiveStreams) -> None:
        await wait_until(lambda: streams.all_have(1), 30, "a final on every stream")
        await asyncio.to_thread(kill_replica, only)

    results = asyncio.run(LiveStreams(server_url, clips[0], OPTS).run(fault))
    check_against_baseline(results, baseline, clips[1])
    assert only not in replica_names("ASRModel")  # a new replica served the rest


def test_ingress_replica_killed_every_client_resumes(
    server_url: str, redis_server: EmbeddedRedis, clips: Any, baseline: Any
) -> None:
    assert len(replica_names("Ingress")) == 2
    victim: list[str] = []

    async def fault(streams: LiveStreams) -> None:
        await wait_until(lambda: streams.all_have(1), 30, "a final on every stream")
        victim.append(owner_of(redis_server.url, streams.session_id(0)))
        await asyncio.to_thread(kill_replica, victim[0])

    results = asyncio.run(LiveStreams(server_url, clips[0], OPTS).run(fault))
    check_against_baseline(results, baseline, clips[1])
    assert victim[0] not in replica_names("Ingress")
    resumed = [r for r in results if r.resumes]
    assert results[0] in resumed  # stream 0 was on the killed replica
    for r in resumed:
        assert all(x.downtime_s < 10 for x in r.resumes)
        assert not r.gaps


def test_redeploy_during_live_streams_loses_nothing(server_url: str, clips: Any, baseline: Any) -> None:
    before = replica_names("Ingress")

    async def fault(streams: LiveStreams) -> None:
        await wait_until(lambda: streams.all_have(1), 30, "a final on every stream")
        # a changed ingress config: Serve starts new replicas and stops the old ones
        await asyncio.to_thread(deploy, ingress={"store": {"heartbeat_s": 1.5}})

    results = asyncio.run(LiveStreams(server_url, clips[0], OPTS).run(fault))
    check_against_baseline(results, baseline, clips[1])
    assert not set(before) & set(replica_names("Ingress")), "the redeploy replaced every ingress replica"
    assert sum(len(r.resumes) for r in results) >= 1


def test_redis_killed_streams_continue_then_resume_works(
    server_url: str, redis_server: EmbeddedRedis, clips: Any, baseline: Any
) -> None:
    marks: dict[str, list[int]] = {}

    async def fault(streams: LiveStreams) -> None:
        await wait_until(lambda: streams.all_have(1), 30, "a final on every stream")
        redis_server.kill()
        marks["at_kill"] = list(streams.finals)
        # transcription goes on without Redis: every stream commits more finals
        await wait_until(
            lambda: all(f > k for f, k in zip(streams.finals, marks["at_kill"], strict=True)),
            30,
            "finals while Redis is down",
        )
        await asyncio.to_thread(redis_server.start)  # on its AOF
        marks["at_restart"] = list(streams.finals)
        # the coalesced writes land once Redis is back: every final sent before is durable
        ids = [streams.session_id(i) for i in range(len(streams.finals))]
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)

        def durable() -> bool:
            stored = [int(client.hget(f"rayscribe:s:{i}", "next_seq") or 0) for i in ids]
            return all(s >= n for s, n in zip(stored, marks["at_restart"], strict=True))

        await wait_until(durable, 30, "pending finals written after Redis came back")
        client.close()
        await asyncio.to_thread(kill_replica, owner_of(redis_server.url, ids[0]))

    results = asyncio.run(LiveStreams(server_url, clips[0], OPTS).run(fault))
    check_against_baseline(results, baseline, clips[1])
    assert results[0].resumes


async def _raw_resume(url: str, session_id: str, token: str) -> tuple[dict[str, Any], int | None]:
    """A resume that must fail: the typed error and the close code."""
    async with connect(url) as ws:
        await ws.send(m.Resume(session_id=session_id, resume_token=token).model_dump_json())
        reply = json.loads(await ws.recv())
        await ws.wait_closed()
        return reply, ws.close_code


def test_resume_errors_are_typed_and_other_streams_continue(server_url: str, clips: Any) -> None:
    async def run() -> dict[str, Any]:
        good = asyncio.create_task(LiveStreams(server_url, clips[0][:1], OPTS).run())
        out: dict[str, Any] = {}
        # a live v1.1 session to misuse
        victim = await connect(server_url)
        await victim.send(m.Start(sample_rate=16000, protocol="v1.1").model_dump_json())
        ready = m.Ready.model_validate_json(await victim.recv())
        assert ready.resume_token
        out["bad_token"] = await _raw_resume(server_url, ready.session_id, "not-the-token")
        out["unknown"] = await _raw_resume(server_url, "0" * 32, ready.resume_token)
        # two resumes racing: both take the session in turn; the older connection is fenced.
        # They reach the two ingress replicas, so which one takes it last is not fixed: the
        # one that gets the error is the one fenced, the other holds the session
        first = await connect(server_url)
        second = await connect(server_url)
        for ws in (first, second):
            await ws.send(
                m.Resume(session_id=ready.session_id, resume_token=ready.resume_token).model_dump_json()
            )
        out["race"] = [json.loads(await first.recv())["type"], json.loads(await second.recv())["type"]]
        async with asyncio.timeout(30):  # fenced within a heartbeat
            fenced = [json.loads(await victim.recv())]
            waits = {asyncio.ensure_future(ws.recv()): ws for ws in (first, second)}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:  # the holder's recv: nothing comes until it closes
                task.cancel()
            won = done.pop()
            loser = waits[won]
            holder = second if loser is first else first
            fenced.append(json.loads(won.result()))
        for ws in (victim, loser):
            await ws.wait_closed()
        out["fenced"] = [(f["code"], ws.close_code) for f, ws in zip(fenced, (victim, loser), strict=True)]
        await holder.send(m.Close().model_dump_json())
        while json.loads(await holder.recv())["type"] != "closed":
            pass
        out["closed"] = await _raw_resume(server_url, ready.session_id, ready.resume_token)
        out["good"] = await good
        return out

    out = asyncio.run(asyncio.wait_for(run(), 120))
    assert out["bad_token"][0]["code"] == "invalid_resume_token" and out["bad_token"][1] == 4403
    assert out["unknown"][0]["code"] == "session_not_found" and out["unknown"][1] == 4404
    assert out["race"] == ["resumed", "resumed"]
    assert out["fenced"] == [("resume_conflict", 4409), ("resume_conflict", 4409)]
    assert out["closed"][0]["code"] == "session_closed" and out["closed"][1] == 4410
    [good] = out["good"]
    assert good.error is None and good.summary is not None and not good.resumes


@pytest.fixture(autouse=True, scope="module")
def _restore_app() -> Iterator[None]:
    yield
    deploy()  # later tiers get the standard app back
