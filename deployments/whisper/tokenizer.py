"""Whisper tokenizer (English-only model) on top of the ``tokenizers`` library."""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

_PUNCTUATION = set(string.punctuation)


@dataclass(frozen=True)
class SpecialTokens:
    eot: int
    sot: int
    sot_prev: int
    sot_lm: int
    transcribe: int
    translate: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int


class WhisperTokenizer:
    def __init__(self, path: Path) -> None:
        self._tok = Tokenizer.from_file(str(path))
        tid = self._tok.token_to_id

        def need(name: str) -> int:
            value = tid(name)
            if value is None:
                raise KeyError(f"tokenizer.json has no {name}")
            return value

        nocap = tid("<|nospeech|>")
        self.special = SpecialTokens(
            eot=need("<|endoftext|>"),
            sot=need("<|startoftranscript|>"),
            sot_prev=need("<|startofprev|>"),
            sot_lm=need("<|startoflm|>"),
            transcribe=need("<|transcribe|>"),
            translate=need("<|translate|>"),
            no_speech=nocap if nocap is not None else need("<|nocaptions|>"),
            no_timestamps=need("<|notimestamps|>"),
            timestamp_begin=need("<|notimestamps|>") + 1,
        )

    @property
    def sot_sequence(self) -> list[int]:
        """English-only models start with <|startoftranscript|> alone."""
        return [self.special.sot]

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, tokens: list[int]) -> str:
        return str(self._tok.decode([t for t in tokens if t < self.special.eot]))

    def split_words(self, tokens: list[int]) -> list[tuple[str, list[int]]]:
        """Group text tokens into words: a word starts at a leading space; punctuation joins
        the word before it.  Tokens that only decode to part of a UTF-8 character are kept
        with their neighbours."""
        words: list[tuple[str, list[int]]] = []
        pending: list[int] = []
        for token in tokens:
            pending.append(token)
            piece = self.decode(pending)
            if "\ufffd" in piece:
                continue
            starts_word = piece.startswith(" ") or not words
            if piece.strip() in _PUNCTUATION and words:
                starts_word = False
            if starts_word:
                words.append((piece, list(pending)))
            else:
                text, toks = words[-1]
                words[-1] = (text + piece, toks + pending)
            pending = []
        if pending:
            words.append((self.decode(pending), list(pending)))
        return words
