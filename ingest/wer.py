"""Word error rate, scored the way the field scores Whisper: with Whisper's English normaliser.

``normalize`` runs :class:`whisper_normalizer.english.EnglishTextNormalizer` (the normaliser
the Whisper paper's WER numbers use, packaged on PyPI as ``whisper-normalizer``; pure Python,
no network): lower case, no punctuation, fillers ("um", "uh", "hmm") removed, British spellings
mapped to American ("colour" -> "color"), titles expanded ("Mr." -> "mister"), contractions
expanded and spoken numbers turned into digits ("twenty five" -> "25").  So a transcript is not
charged for writing a number or a word the other accepted way.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from whisper_normalizer.english import EnglishTextNormalizer


@cache
def _normalizer() -> Callable[[str], str]:
    normalizer: Callable[[str], str] = EnglishTextNormalizer()  # reads its spelling table once
    return normalizer


def normalize(text: str) -> list[str]:
    """The words of ``text`` after Whisper's English normalisation."""
    return _normalizer()(text).split()


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


# a digit the normaliser leaves spelled out where it stands alone ("01, 8,03" -> "one 803")
_DIGIT_WORDS = {
    w: str(i)
    for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
}


def _halves(words: list[str]) -> list[str]:
    """``words`` with "N and a half" as "N.5": the normaliser turns "fourteen and a half"
    into "14.5" but leaves "14 and a half" (the model writes either)."""
    out: list[str] = []
    for w in words:
        out.append(w)
        if len(out) >= 4 and out[-3:] == ["and", "a", "half"]:
            number = _DIGIT_WORDS.get(out[-4], out[-4])
            if number.isdigit():
                out[-4:] = [number + ".5"]
    return out


def keeps_last_word(reference: list[str], hypothesis: list[str]) -> bool:
    """The hypothesis ends with the reference's last word (normalised words): among its own
    last three, spaces ignored ("18 13" and "1813" are the same spoken year), a lone digit
    word as its digit ("one 803" and "1803" are the same spoken digits), "N and a half" as
    "N.5" (see :func:`_halves`)."""
    reference, hypothesis = _halves(reference), _halves(hypothesis)
    if not reference:
        return True
    tail = hypothesis[-3:]
    if reference[-1] in tail:
        return True
    digits = [_DIGIT_WORDS.get(w, w) for w in tail]
    return "".join(digits).endswith(_DIGIT_WORDS.get(reference[-1], reference[-1]))
