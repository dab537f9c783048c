"""WER scored with Whisper's English normaliser: written forms that mean the same are not errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ingest.wer import edit_distance, keeps_last_word, normalize, wer


def test_normalize_strips_case_and_punctuation_and_expands_titles() -> None:
    """Lower case, no punctuation, "Mr." spelled out, a hyphen splits words."""
    assert normalize("Hello, World! Mr. Smith's 2-day trip.") == [
        "hello",
        "world",
        "mister",
        "smith",
        "is",  # Whisper's normaliser reads "'s" as "is", whichever it was
        "2",
        "day",
        "trip",
    ]


@pytest.mark.parametrize(
    ("reference", "hypothesis"),
    [
        ("I think we should go now", "Um, I think, uh, we should go now."),  # fillers
        ("the colour of the centre", "the color of the center"),  # British / American
        ("we organised a catalogue", "we organized a catalog"),
        ("twenty five people came", "25 people came"),  # number forms
        ("it cost one hundred and twenty dollars", "it cost $120"),
        ("in two thousand and six", "in 2006"),
        ("they're gonna win", "they are going to win"),  # contractions, informal forms
    ],
)
def test_equivalent_forms_score_zero_edits(reference: str, hypothesis: str) -> None:
    """Each pair differs only in how it is written, so it scores no edit at all."""
    assert edit_distance(normalize(reference), normalize(hypothesis)) == 0
    assert wer([reference], [hypothesis]) == 0.0


def test_different_numbers_still_count() -> None:
    """Normalising numbers does not hide a wrong one."""
    assert wer(["twenty five people"], ["twenty six people"]) == pytest.approx(1 / 2)


def test_wer_counts_substitutions_insertions_deletions() -> None:
    """One substitution and one insertion over four reference words; pooled over pairs."""
    assert wer(["a b c d"], ["a x c d e"]) == 0.5
    assert wer(["a b", "c d"], ["a b", "c d"]) == 0.0
    assert wer(["a b c d"], [""]) == 1.0
    assert wer(["cat sat", "on the mat"], ["cat", "on a mat"]) == pytest.approx(2 / 5)


def test_wer_imports_without_torch() -> None:
    """The client-side scorer stays light: importing and using it loads no torch."""
    code = "import sys, ingest.wer as w; w.normalize('twenty five'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_last_word_is_kept_whatever_the_digits_formatting() -> None:
    """The tail check (every evalset clip, slow tier) compares normalised words: digit strings
    come out split differently ("01803" -> 1803, "01, 8,03" -> one 803) while a lost word
    still shows."""
    offline = normalize(" 1,0001 90210 01803")
    assert keeps_last_word(offline, normalize(" 1,0001. 9,02,10. 01, 8,03."))
    assert keeps_last_word(normalize(" in the year 1813"), normalize(" in the year 18 13"))
    assert not keeps_last_word(offline, normalize(" 1,0001. 9,02,10."))  # lost: 01803
    assert not keeps_last_word(normalize(" feel'st it cold"), normalize(" warm and thou"))
    # the same number in the model's two forms (LJ002-0041); "half" missing is a loss
    ljspeech = normalize(" twenty three feet by 14 and a half")
    assert keeps_last_word(ljspeech, normalize(" 23 feet by 14.5"))
    assert keeps_last_word(normalize(" 23 feet by 14.5"), ljspeech)
    assert not keeps_last_word(ljspeech, normalize(" 23 feet by 14"))
