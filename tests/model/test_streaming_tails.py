"""The end of a stream never loses spoken words: every evalset clip streamed through the real
policy (VAD, endpoints, the close flush; ``deployments.simulate``) ends with the words the
same engine hears when it decodes the clip offline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from deployments.app import served_args
from deployments.offline import transcribe_long
from deployments.simulate import simulate_stream
from deployments.whisper.engine import WhisperEngine
from ingest.audio import read_wav
from ingest.wer import keeps_last_word, normalize

pytestmark = pytest.mark.model
# what ray_config.yaml serves on CPU (engine and streaming policy)
_APP = served_args()
SERVED = _APP.engine.model_copy(update={"num_threads": 2})
POLICY = _APP.ingress.policy


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine(SERVED)


def rows(evalset: Path, manifest: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (evalset / manifest).read_text().splitlines()]


def lost_tail(engine: WhisperEngine, audio_path: Path) -> tuple[list[str], list[str]] | None:
    """(offline ending, streamed ending) when the streamed transcript lacks the offline
    transcript's last word (``ingest.wer.keeps_last_word``); None when it is there."""
    audio = read_wav(audio_path).samples
    offline = normalize("".join(w.text for w in transcribe_long(engine.transcribe, audio)))
    streamed = normalize(simulate_stream(engine.transcribe, audio, POLICY).text)
    if keeps_last_word(offline, streamed):
        return None
    return offline[-3:], streamed[-3:]


def check_tails(
    engine: WhisperEngine, evalset: Path, manifest: str, keep: Callable[[int, str], bool]
) -> None:
    lost = {}
    for i, row in enumerate(rows(evalset, manifest)):
        if keep(i, str(row["id"])):
            tail = lost_tail(engine, evalset / str(row["audio"]))
            if tail is not None:
                lost[str(row["id"])] = tail
    assert lost == {}


def test_sampled_clips_keep_their_last_words(engine: WhisperEngine, evalset: Path) -> None:
    """Every 8th short clip (all sources) and the recording whose tail the issue saw lost."""
    check_tails(engine, evalset, "manifest.jsonl", lambda i, _: i % 8 == 0)
    check_tails(engine, evalset, "manifest_longform.jsonl", lambda _, key: key.endswith("sonnet-002"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("manifest", ["manifest.jsonl", "manifest_longform.jsonl"])
def test_no_clip_loses_its_last_words(engine: WhisperEngine, evalset: Path, manifest: str) -> None:
    """Every evalset clip (``make test-slow``: ~15 minutes on 2 cores)."""
    check_tails(engine, evalset, manifest, lambda *_: True)
