from ingest.wer import normalize, wer


def test_normalize_strips_case_and_punctuation() -> None:
    assert normalize("Hello, World! It's Mr. Smith's 2-day trip.") == [
        "hello",
        "world",
        "it's",
        "mister",
        "smith's",
        "two",
        "day",
        "trip",
    ]


def test_wer_counts_substitutions_insertions_deletions() -> None:
    assert wer(["a b c d"], ["a x c d e"]) == 0.5
    assert wer(["a b", "c d"], ["a b", "c d"]) == 0.0
    assert wer(["a b c d"], [""]) == 1.0
