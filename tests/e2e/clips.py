"""One short evalset clip and its offline WER: the bound the browser and Deepgram tests share
with the SDK's (test_service.py: streaming WER <= offline WER of the same model + 5 points)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ingest.audio import read_wav
from ingest.wer import wer

STREAMING_SLACK = 0.05  # test_service.py's streaming cost over the offline transcript


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str
    duration_s: float
    offline_wer: float

    @property
    def bound(self) -> float:
        return self.offline_wer + STREAMING_SLACK


def short_clip(evalset: Path, min_s: float = 8.0, max_s: float = 11.0) -> Clip:
    return _clip(evalset, next(r for r in _rows(evalset) if min_s <= float(r["duration_s"]) <= max_s))


def clip_by_id(evalset: Path, clip_id: str) -> Clip:
    return _clip(evalset, next(r for r in _rows(evalset) if r["id"] == clip_id))


def _rows(evalset: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (evalset / "manifest.jsonl").read_text().splitlines()]


def _clip(evalset: Path, row: dict[str, object]) -> Clip:
    path = evalset / str(row["audio"])
    from deployments.transcript import DecodeRequest
    from deployments.whisper.engine import WhisperEngine

    offline = WhisperEngine().transcribe([DecodeRequest(read_wav(path).samples)])[0].text
    duration = float(str(row["duration_s"]))
    return Clip(path, str(row["text"]), duration, wer([str(row["text"])], [offline]))
