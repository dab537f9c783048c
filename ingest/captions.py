"""Transcript files from finals: plain text, JSON, SubRip (SRT) and WebVTT.  Sans-I/O: every
function takes finals and returns the file's text; the CLI writes it.

Captions are cut from the word timings, never from the final boundaries alone: a final can
run for many seconds (an endpoint-less monologue), which no reader follows as one cue.  A
cue ends at a word boundary before it would pass ``max_cue_s`` or ``max_lines`` lines of
``max_line_chars`` characters (the common broadcast guideline: 2 lines of 42).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ingest import messages as m

Format = Literal["txt", "json", "srt", "vtt"]
FORMATS: tuple[Format, ...] = ("txt", "json", "srt", "vtt")


@dataclass(frozen=True)
class CueRules:
    max_cue_s: float = 7.0
    max_line_chars: int = 42
    max_lines: int = 2


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def timestamp(seconds: float, decimal: str) -> str:
    """``HH:MM:SS,mmm`` (SRT, ``decimal=","``) or ``HH:MM:SS.mmm`` (WebVTT); hours never wrap."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    mins, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{mins:02d}:{s:02d}{decimal}{ms:03d}"


def wrap(words: Sequence[str], width: int) -> list[str]:
    """Greedy line filling at word boundaries; a word longer than ``width`` gets its own line."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _fits(words: Sequence[str], start: float, end: float, rules: CueRules) -> bool:
    return end - start <= rules.max_cue_s and len(wrap(words, rules.max_line_chars)) <= rules.max_lines


def cues(finals: Sequence[m.Final], rules: CueRules | None = None) -> list[Cue]:
    """The finals cut into cues (a cue never spans two finals: a final ends at a pause)."""
    r = rules or CueRules()
    out: list[Cue] = []
    for final in finals:
        timed = [w.model_copy(update={"word": w.word.strip()}) for w in final.words if w.word.strip()]
        if not timed:  # no word timings: the final is one cue
            if final.text.strip():
                out.append(Cue(final.start, final.end, tuple(wrap(final.text.split(), r.max_line_chars))))
            continue
        group = [timed[0]]
        for word in timed[1:]:
            candidate = [*group, word]
            if _fits([w.word for w in candidate], candidate[0].start, word.end, r):
                group = candidate
            else:
                out.append(_cue(group, r))
                group = [word]
        out.append(_cue(group, r))
    return out


def _cue(words: Sequence[m.WordTiming], rules: CueRules) -> Cue:
    lines = wrap([w.word for w in words], rules.max_line_chars)
    return Cue(words[0].start, max(words[-1].end, words[0].start), tuple(lines))


def to_txt(finals: Sequence[m.Final]) -> str:
    text = " ".join(f.text.strip() for f in finals if f.text.strip())
    return f"{text}\n" if text else ""


def to_json(finals: Sequence[m.Final], session_id: str | None = None) -> str:
    """The finals as the server sent them (word timings included), in ``seq`` order."""
    doc = {"session_id": session_id, "finals": [f.model_dump(exclude={"type"}) for f in finals]}
    return json.dumps(doc, indent=2) + "\n"


def to_srt(finals: Sequence[m.Final], rules: CueRules | None = None) -> str:
    blocks = [
        f"{i}\n{timestamp(c.start, ',')} --> {timestamp(c.end, ',')}\n" + "\n".join(c.lines) + "\n"
        for i, c in enumerate(cues(finals, rules), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(finals: Sequence[m.Final], rules: CueRules | None = None) -> str:
    blocks = [
        f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n" + "\n".join(c.lines) + "\n"
        for c in cues(finals, rules)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(fmt: Format, finals: Sequence[m.Final], session_id: str | None = None) -> str:
    ordered = sorted(finals, key=lambda f: f.seq)  # a resumed stream may replay out of order
    if fmt == "txt":
        return to_txt(ordered)
    if fmt == "json":
        return to_json(ordered, session_id)
    if fmt == "srt":
        return to_srt(ordered)
    return to_vtt(ordered)
