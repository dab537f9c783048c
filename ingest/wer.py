"""Word error rate with a small English text normaliser (no external dependencies)."""

from __future__ import annotations

import re
import unicodedata

_NUMBERS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
}
_SPELLING = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "okay": "ok"}


def normalize(text: str) -> list[str]:
    """Lower-case, strip accents and punctuation (keeping in-word apostrophes), split."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("\u2019", "'").replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    words = [w.strip("'") for w in text.split()]
    return [_SPELLING.get(w, _NUMBERS.get(w, w)) for w in words if w]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Pooled WER over utterance pairs (total edits / total reference words)."""
    edits = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r = normalize(ref)
        edits += edit_distance(r, normalize(hyp))
        words += len(r)
    return edits / max(1, words)
