"""Batched greedy decoding with a KV cache, word timestamps and a repetition-loop guard."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from deployments.transcript import Hypothesis, Word
from deployments.whisper.features import ENCODER_FRAMES_PER_SECOND, FRAMES_PER_SECOND
from deployments.whisper.graphs import StaticSteps
from deployments.whisper.model import Whisper
from deployments.whisper.timing import clamp_stretched_ends, token_boundaries
from deployments.whisper.tokenizer import WhisperTokenizer

# generous for speech (English runs at ~3-4 tokens per second): a row past this is looping
TOKENS_PER_SECOND = 8.0


@dataclass(frozen=True)
class DecodeOptions:
    max_new_tokens: int = 224  # Whisper's sample_len: half the text context
    max_prompt_tokens: int = 223
    compression_ratio_threshold: float = 2.4  # above: treat as a repetition loop
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0


@dataclass
class _Row:
    tokens: list[int]
    logprobs: list[float]
    # alignment scores: the decoder positions that predicted this row's tokens are ``n_align``
    # consecutive ones of the batch's (prefix positions, then one per step) from ``first``
    first: int
    n_align: int
    done: bool = False
    n_forced: int = 0  # leading tokens that were fed, not generated
    budget: int = 448  # stop once the row holds this many tokens (forced ones included)


class GreedyDecoder:
    """Greedy decoding of a batch of 30 s log-mel windows, each with its own prompt."""

    def __init__(
        self,
        model: Whisper,
        tokenizer: WhisperTokenizer,
        suppress_ids: list[int],
        suppress_ids_begin: list[int],
        alignment_heads: list[tuple[int, int]],
        options: DecodeOptions | None = None,
        steps: StaticSteps | None = None,
    ) -> None:
        self.model = model
        self.steps = steps  # the token loop over a static cache (CUDA graphs), where it fits
        self.tok = tokenizer
        self.opts = options or DecodeOptions()
        sp = tokenizer.special
        vocab = model.dims.n_vocab
        specials = [
            sp.transcribe,
            sp.translate,
            sp.sot,
            sp.sot_prev,
            sp.sot_lm,
            sp.no_speech,
            sp.no_timestamps,
        ]
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[[t for t in suppress_ids + specials if t < vocab]] = True
        mask[sp.timestamp_begin :] = True  # decoding runs with <|notimestamps|>
        begin = mask.clone()
        begin[suppress_ids_begin] = True
        device = next(model.parameters()).device
        self.suppress, self.suppress_begin = mask.to(device), begin.to(device)
        self.alignment_heads = alignment_heads

    def prefix(self, prompt: str) -> list[int]:
        sp = self.tok.special
        prev = self.tok.encode(" " + prompt.strip())[-self.opts.max_prompt_tokens :] if prompt.strip() else []
        head = [sp.sot_prev, *prev] if prev else []
        return [*head, *self.tok.sot_sequence, sp.no_timestamps]

    def forced_tokens(self, text: str) -> list[int]:
        """Text the window is known to start with, as tokens fed to the decoder, not generated."""
        return self.tok.encode(" " + text.strip())[: self.opts.max_new_tokens // 2] if text.strip() else []

    @torch.inference_mode()
    def decode(
        self,
        audio: torch.Tensor,
        prompts: list[str],
        n_frames: list[int],
        offsets: list[float],
        forced: list[str] | None = None,
        min_tokens: list[int] | None = None,
        audio_valid: torch.Tensor | None = None,
    ) -> list[Hypothesis]:
        """audio: the encoder's output (B, audio_ctx, state) on the model's device, and where
        rows were encoded at different widths, ``audio_valid`` (B, audio_ctx) their real
        positions; n_frames: real mel frames per row; ``forced``: per row, text the transcript
        of the window must start with (committed words still inside it): fed in one pass
        instead of being decoded token by token; ``min_tokens``: per row, end-of-text is held
        back for this many generated tokens."""
        device = audio.device
        forced_toks = [self.forced_tokens(f) for f in (forced or [""] * len(prompts))]
        prefixes = [self.prefix(p) + f for p, f in zip(prompts, forced_toks, strict=True)]
        tokens, valid = _left_pad(prefixes, device)
        batch, width = tokens.shape
        positions = (valid.long().cumsum(dim=1) - 1).clamp_min(0)
        decoder = self.model.decoder
        cache = decoder.new_cache(audio, audio_valid)
        hidden, qks = decoder(tokens, positions, valid, cache)
        # the <|startoftranscript|> position predicts no-speech; the last one the next token
        sot_at = torch.tensor([width - 2 - len(f) for f in forced_toks], device=device)
        sot_hidden = hidden[torch.arange(batch, device=device), sot_at]
        no_speech = decoder.logits(sot_hidden).float().softmax(dim=-1)[:, self.tok.special.no_speech]
        last = decoder.logits(hidden[:, -1]).float()
        # (B, heads, positions, audio_ctx); the last position's row is step 0's
        prefix_align = torch.stack([qks[layer][:, head] for layer, head in self.alignment_heads], dim=1)
        rows = [
            _Row(list(f), [0.0] * len(f), width - 1 - len(f), len(f), n_forced=len(f)) for f in forced_toks
        ]
        for row, frames in zip(rows, n_frames, strict=True):
            seconds = frames / FRAMES_PER_SECOND
            row.budget = row.n_forced + min(self.opts.max_new_tokens, int(seconds * TOKENS_PER_SECOND) + 8)
        first_mask = torch.stack([self.suppress if f else self.suppress_begin for f in forced_toks])
        limit = min(self.opts.max_new_tokens, self.model.dims.n_text_ctx - width)
        next_pos = positions[:, -1:] + 1
        hold = torch.tensor(min_tokens or [0] * batch, device=device)
        eot = self.tok.special.eot
        static = self.steps if self.steps is not None and self.steps.fits(batch) else None
        if static is not None:
            static.load(cache, valid)
        steps: list[torch.Tensor] = []  # each step's (B, heads, audio_ctx), after step 0's
        for step in range(limit):
            last = last.masked_fill(first_mask if step == 0 else self.suppress, -np.inf)
            last[:, eot] = last[:, eot].masked_fill(hold > step, -np.inf)
            logp = last.log_softmax(dim=-1)
            self._append(rows, logp)
            if all(r.done for r in rows) or step == limit - 1:
                break
            feed = torch.tensor(
                [r.tokens[-1] if not r.done else self.tok.special.eot for r in rows], device=device
            )[:, None]
            if static is not None:
                last, align = static.step(feed, next_pos, width + step)
            else:
                valid = torch.cat([valid, torch.ones(batch, 1, dtype=torch.bool, device=device)], dim=1)
                hidden, qks = decoder(feed, next_pos, valid, cache)
                last = decoder.logits(hidden[:, -1]).float()
                align = self._alignment_rows(qks)
            steps.append(align[:, :, None])
            next_pos = next_pos + 1
        aligns = torch.cat([prefix_align, *steps], dim=2) if steps else prefix_align
        return self._finish_all(rows, aligns, n_frames, offsets, no_speech.tolist())

    def _append(self, rows: list[_Row], logp: torch.Tensor) -> None:
        """Extend each unfinished row with its greedy choice (and that step's alignment row)."""
        best = logp.argmax(dim=-1)
        # one device->host copy per step for the whole batch (not one per row: on a GPU each
        # is a sync)
        choice, chosen = best.tolist(), logp.gather(1, best[:, None])[:, 0].tolist()
        for i, row in enumerate(rows):
            if row.done:
                continue
            row.n_align += 1
            if choice[i] == self.tok.special.eot:
                row.done = True
            else:
                row.tokens.append(choice[i])
                row.logprobs.append(chosen[i])
                # a window holds ~3 tokens per second of speech: past the row's budget it is
                # looping (the loop guard cuts it); stop it instead of running to 224 tokens
                row.done = len(row.tokens) >= row.budget

    def _alignment_rows(self, qks: list[torch.Tensor]) -> torch.Tensor:
        """(B, heads, audio_ctx) scores of the alignment heads at the last position (left on
        the model's device: the word timings are worked out there)."""
        return torch.stack([qks[layer][:, head, -1] for layer, head in self.alignment_heads], dim=1)

    def _finish_all(
        self,
        rows: list[_Row],
        aligns: torch.Tensor,
        n_frames: list[int],
        offsets: list[float],
        no_speech: list[float],
    ) -> list[Hypothesis]:
        """Hypotheses for the batch; the word timings of all rows in one batched DTW
        (``aligns``: (B, heads, positions, audio_ctx), the rows' alignment scores)."""
        kept: list[tuple[int, list[int], int]] = []  # row, its tokens, its alignment positions
        out: list[Hypothesis] = []
        for i, row in enumerate(rows):
            tokens, looped, forced = row.tokens, False, row.n_forced
            cut = self._loop_cut(tokens[forced:])  # forced text is committed: only cut what is new
            if cut is not None:
                tokens, looped = tokens[: forced + cut], True
            generated = row.logprobs[forced : len(tokens)]
            avg_logprob = float(np.mean(generated)) if generated else 0.0
            silent = (
                no_speech[i] > self.opts.no_speech_threshold and avg_logprob < self.opts.logprob_threshold
            )
            out.append(Hypothesis([], no_speech[i], avg_logprob, looped))
            if tokens and not (silent and not forced):
                # a position per token, and the one that predicted end-of-text where there is one
                kept.append((i, tokens, min(row.n_align, len(tokens) + 1)))
        boundaries = token_boundaries(
            aligns,
            [i for i, _, _ in kept],
            [rows[i].first for i, _, _ in kept],
            [n for *_, n in kept],
            [n_frames[i] // 2 for i, _, _ in kept],
        )
        for (i, tokens, _), frames in zip(kept, boundaries, strict=True):
            starts = frames / ENCODER_FRAMES_PER_SECOND
            texts: list[str] = []
            bounds: list[tuple[float, float]] = []
            probs: list[float] = []
            index = forced_words = 0
            for text, toks in self.tok.split_words(tokens):
                # a word that starts in the forced text is that text's (generated punctuation
                # joins it: "words" fed, "," decoded)
                forced_words += index < rows[i].n_forced
                end_index = index + len(toks)
                word = rows[i].logprobs[index:end_index]  # (a plain mean: np.mean costs 5 us a call)
                probs.append(math.exp(sum(word) / len(word)))
                texts.append(text)
                bounds.append((offsets[i] + float(starts[index]), offsets[i] + float(starts[end_index])))
                index = end_index
            spans = clamp_stretched_ends(texts, bounds)
            words = [Word(t, s, e, p) for t, (s, e), p in zip(texts, spans, probs, strict=True)]
            out[i] = Hypothesis(words, out[i].no_speech_prob, out[i].avg_logprob, out[i].looped, forced_words)
        return out

    def _loop_cut(self, tokens: list[int]) -> int | None:
        """Where to cut a repetition loop, or None.  A loop is a text whose zlib compression
        ratio passes the threshold; the cut keeps one copy of the first span that repeats
        three times in a row."""
        text = self.tok.decode(tokens).encode("utf-8")
        if not text or len(text) / len(zlib.compress(text)) <= self.opts.compression_ratio_threshold:
            return None
        n = len(tokens)
        for start in range(n):
            for period in range(1, (n - start) // 3 + 1):
                a, b, c = (tokens[start + k * period : start + (k + 1) * period] for k in range(3))
                if a == b == c:
                    return start + period
        return None


def _left_pad(prefixes: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, width), left-padded, and the mask of real (non-padding) positions."""
    width = max(len(p) for p in prefixes)
    tokens = torch.zeros(len(prefixes), width, dtype=torch.long)
    valid = torch.zeros(len(prefixes), width, dtype=torch.bool)
    for i, p in enumerate(prefixes):
        tokens[i, width - len(p) :] = torch.tensor(p)
        valid[i, width - len(p) :] = True
    return tokens.to(device), valid.to(device)
