"""Transcript files (ingest/captions.py): every format parsed back and checked against the
finals it came from; the CLI's --format against the fake server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest import captions
from ingest import messages as m
from ingest.audio import encode_pcm
from ingest.captions import CueRules

_TIME = r"(\d{2,}):(\d{2}):(\d{2})[,.](\d{3})"


def final(seq: int, words: list[tuple[str, float, float]]) -> m.Final:
    timings = [m.WordTiming(word=w, start=s, end=e, probability=0.9) for w, s, e in words]
    return m.Final(
        seq=seq, text=" ".join(w for w, _, _ in words), start=words[0][1], end=words[-1][2], words=timings
    )


def seconds(h: str, mi: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(mi) * 60 + int(s) + int(ms) / 1000


def parse_srt(text: str) -> list[tuple[int, float, float, list[str]]]:
    out = []
    for block in text.strip().split("\n\n"):
        index, times, *lines = block.split("\n")
        match = re.fullmatch(f"{_TIME} --> {_TIME}", times)
        assert match, times
        assert "," in times and "." not in times
        g = match.groups()
        out.append((int(index), seconds(*g[:4]), seconds(*g[4:]), lines))
    return out


def parse_vtt(text: str) -> list[tuple[float, float, list[str]]]:
    header, _, body = text.partition("\n\n")
    assert header == "WEBVTT"
    out = []
    for block in body.strip().split("\n\n") if body.strip() else []:
        times, *lines = block.split("\n")
        match = re.fullmatch(f"{_TIME} --> {_TIME}", times)
        assert match and "," not in times, times
        g = match.groups()
        out.append((seconds(*g[:4]), seconds(*g[4:]), lines))
    return out


FINALS = [
    final(0, [("And", 0.0, 0.3), ("so,", 0.3, 1.04)]),
    final(1, [("my", 1.04, 1.3), ("fellow", 1.3, 1.74)]),
]


@pytest.mark.parametrize(
    ("t", "srt", "vtt"),
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (1.0, "00:00:01,000", "00:00:01.000"),
        (61.2346, "00:01:01,235", "00:01:01.235"),
        (3 * 3600 + 25 * 60 + 7.5, "03:25:07,500", "03:25:07.500"),
        (100 * 3600.0, "100:00:00,000", "100:00:00.000"),
        (-0.01, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_timestamps(t: float, srt: str, vtt: str) -> None:
    assert captions.timestamp(t, ",") == srt
    assert captions.timestamp(t, ".") == vtt


def test_srt_and_vtt_round_trip_the_finals() -> None:
    srt = parse_srt(captions.render("srt", FINALS))
    assert srt == [(1, 0.0, 1.04, ["And so,"]), (2, 1.04, 1.74, ["my fellow"])]
    vtt = parse_vtt(captions.render("vtt", FINALS))
    assert vtt == [(s, e, lines) for _, s, e, lines in srt]


def test_txt_and_json() -> None:
    assert captions.render("txt", FINALS) == "And so, my fellow\n"
    doc = json.loads(captions.render("json", list(reversed(FINALS)), "abc"))
    assert doc["session_id"] == "abc"
    assert [m.Final.model_validate(f) for f in doc["finals"]] == FINALS  # seq order, word timings kept


def test_empty_transcript() -> None:
    assert captions.render("txt", []) == ""
    assert captions.render("srt", []) == ""
    assert captions.render("vtt", []) == "WEBVTT\n\n"
    assert parse_vtt(captions.render("vtt", [])) == []
    assert json.loads(captions.render("json", [], None)) == {"session_id": None, "finals": []}


def test_a_long_final_is_split_into_cues_at_word_boundaries() -> None:
    # 40 words of 0.5 s each (20 s, ~200 characters): one final, many cues
    words = [(f"word{i:02d}", 3600 + i * 0.5, 3600 + i * 0.5 + 0.4) for i in range(40)]
    rules = CueRules(max_cue_s=7.0, max_line_chars=42, max_lines=2)
    cues = parse_srt(captions.to_srt([final(0, words)], rules))
    assert len(cues) > 2
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1))
    texts = [w for c in cues for line in c[3] for w in line.split(" ")]
    assert texts == [w for w, _, _ in words]  # every word once, in order, none cut
    for _, start, end, lines in cues:
        assert start >= 3600.0  # hours > 0 survive the round trip
        assert end - start <= 7.0 and len(lines) <= 2 and all(len(x) <= 42 for x in lines)
    # cue times are the words' own times
    assert cues[0][1] == words[0][1] and cues[-1][2] == pytest.approx(words[-1][2])
    starts = [c[1] for c in cues]
    assert starts == sorted(starts)


def test_duration_limit_splits_even_short_text() -> None:
    words = [("a", 0.0, 0.5), ("b", 5.0, 5.5), ("c", 9.0, 9.5)]
    cues = captions.cues([final(0, words)], CueRules(max_cue_s=6.0))
    assert [(c.start, c.end, c.lines) for c in cues] == [(0.0, 5.5, ("a b",)), (9.0, 9.5, ("c",))]


def test_a_final_without_word_timings_is_one_cue() -> None:
    bare = m.Final(seq=0, text="hello there", start=2.0, end=3.0, words=[])
    assert parse_vtt(captions.to_vtt([bare])) == [(2.0, 3.0, ["hello there"])]


def run_cli(*args: str) -> tuple[int, str, str]:
    """``rayscribe - ARGS`` in a subprocess against the fake server (3 s of audio: 3 finals)."""
    from tests.unit.fake_server import start_server

    async def main() -> tuple[int, str, str]:
        server = await start_server()
        port = server.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ingest.cli",
            "-",
            "--url",
            f"ws://127.0.0.1:{port}",
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ},
        )
        audio = encode_pcm(np.zeros(16000 * 3, np.float32), "pcm_s16le")
        out, err = await asyncio.wait_for(proc.communicate(audio), 30)
        server.close()
        return proc.returncode or 0, out.decode(), err.decode()

    return asyncio.run(main())


def test_cli_format_srt_to_stdout_moves_the_live_view_to_stderr() -> None:
    code, out, err = run_cli("--format", "srt")
    assert code == 0, err
    assert [(i, s, e, lines) for i, s, e, lines in parse_srt(out)] == [
        (1, 0.5, 1.0, ["w0"]),
        (2, 1.5, 2.0, ["w1"]),
        (3, 2.5, 3.0, ["w2"]),
    ]
    assert "FINAL" in err and "[closed] 3.0s audio" in err and "Transcript:" not in out + err


def test_cli_format_vtt_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "out.vtt"
    code, out, err = run_cli("--format", "vtt", "--output", str(path))
    assert code == 0, err
    assert [c[2] for c in parse_vtt(path.read_text())] == [["w0"], ["w1"], ["w2"]]
    assert "FINAL" in out  # the live view stays on stdout


def test_cli_without_format_prints_as_before() -> None:
    code, out, _ = run_cli()
    assert code == 0
    assert out.rstrip().endswith("Transcript: w0  w1  w2")  # unchanged
