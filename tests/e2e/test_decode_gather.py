"""Decodes gathered into calls (``ingress.decode_gather_s``, deployments/gather.py) through
real Serve, real WebSockets and real Whisper: each stream still gets its own transcript, and
the ASR deployment took fewer calls than decodes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ingest.audio import read_wav
from ingest.client import StreamOptions, StreamResult, stream_file
from ingest.errors import ModelError
from ingest.wer import wer
from tests.e2e.app import deploy
from tests.e2e.test_service import check_finals, short_clips

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gathering_app(server_url: str) -> Iterator[str]:
    yield deploy(ingress={"decode_gather_s": 0.05})
    deploy()  # the tier's default app for the modules after this one


def test_streams_share_calls_and_keep_their_own_transcripts(gathering_app: str, evalset: Path) -> None:
    from ray import serve

    asr = serve.get_deployment_handle("ASRModel", app_name="rayscribe")
    before = asr.stats.remote().result()
    rows = short_clips(evalset, 4)
    refs = [str(r["text"]) for r in rows]

    async def run_all() -> list[StreamResult]:
        opts = StreamOptions(speed=2.0)
        paths = [evalset / str(r["audio"]) for r in rows]
        return list(await asyncio.gather(*(stream_file(gathering_app, p, opts) for p in paths)))

    results = asyncio.run(run_all())
    for i, r in enumerate(results):
        assert r.error is None and r.close_code == 1000
        check_finals(r)
        own = wer([refs[i]], [r.text])  # its own clip's words, not a neighbour's
        assert own <= 0.25 and all(own < wer([refs[j]], [r.text]) for j in range(len(refs)) if j != i)
    after = asr.stats.remote().result()
    decodes, calls = after["decodes"] - before["decodes"], after["calls"] - before["calls"]
    assert decodes > calls > 0, (decodes, calls)


def test_a_bad_window_fails_only_its_own_request(gathering_app: str, evalset: Path) -> None:
    from ray import serve

    from deployments.transcript import DecodeRequest

    audio = read_wav(evalset / str(short_clips(evalset, 1)[0]["audio"])).samples
    asr = serve.get_deployment_handle("ASRModel", app_name="rayscribe")
    good, bad = asr.transcribe_many.remote(
        [DecodeRequest(audio), DecodeRequest(np.zeros((2, 16000), dtype=np.float32))]
    ).result()
    assert good.words and isinstance(bad, ModelError) and "1-D" in str(bad)
