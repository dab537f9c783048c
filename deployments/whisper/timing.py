"""Word timestamps from cross-attention alignment heads (DTW), as in Whisper's timing.py."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MEDIAN_FILTER_WIDTH = 7


def median_filter(x: torch.Tensor, width: int = MEDIAN_FILTER_WIDTH) -> torch.Tensor:
    """Median over a sliding window on the last axis, reflect-padded."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode="reflect")
    return y.unfold(-1, width, 1).median(dim=-1).values.reshape(shape)


def dtw_batch(costs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Monotonic alignment paths through several cost matrices (N tokens x M frames each),
    as (token_indices, frame_indices), all rows of the batch at once.

    One token row at a time: within a row a cell depends on the one left of it, and that
    chain is a prefix minimum (``acc[i, j] = S[j] + min_k<=j (best[k] - S[k-1])``, S the
    running sum of the row's costs, ``best[k]`` the cheaper of the two cells above-left and
    above), so each row is a handful of vectorised calls: ~N calls per batch instead of one
    per anti-diagonal (N + M, ~1500 for a 30 s window; that loop was half of a GPU batch's
    time).  Ties go diagonal, then up, then left, as in Whisper.  Each matrix is padded right
    and below, where no path of its own reaches."""
    if not costs:
        return []
    b = len(costs)
    n = max(c.shape[0] for c in costs)
    m = max(c.shape[1] for c in costs)
    cost = np.zeros((b, n, m))
    for k, c in enumerate(costs):
        cost[k, : c.shape[0], : c.shape[1]] = c
    inf_col = np.full((b, 1), np.inf)
    above = np.concatenate([np.zeros((b, 1)), np.full((b, m), np.inf)], axis=1)  # acc[0, :]
    trace = np.zeros((b, n + 1, m + 1), dtype=np.int8)
    for i in range(1, n + 1):
        diag, up = above[:, :-1], above[:, 1:]
        best = np.minimum(diag, up)
        run = np.cumsum(cost[:, i - 1], axis=1)
        row = run + np.minimum.accumulate(best - (run - cost[:, i - 1]), axis=1)
        left = np.concatenate([inf_col, row[:, :-1]], axis=1)
        trace[:, i, 1:] = np.where(left < best, 2, np.where(diag <= up, 0, 1))
        above = np.concatenate([inf_col, row], axis=1)
    return [_backtrace(trace[k], c.shape[0], c.shape[1]) for k, c in enumerate(costs)]


def _backtrace(trace: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The path ending at (n, m), one token row per step: a row's run of left moves is found
    with one vectorised search instead of a step per frame."""
    i, j = n, m
    tokens: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    while i > 0 and j > 0:
        turns = np.flatnonzero(trace[i, 1 : j + 1] != 2)  # where the path leaves this row
        k = int(turns[-1]) + 1 if turns.size else 1
        frames.append(np.arange(j - 1, k - 2, -1, dtype=np.int64))
        tokens.append(np.full(j - k + 1, i - 1, dtype=np.int64))
        i, j = (i - 1, k - 1) if trace[i, k] == 0 else (i - 1, k)
    if not tokens:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(tokens)[::-1].copy(), np.concatenate(frames)[::-1].copy()


def token_boundaries_batch(qks: list[torch.Tensor], n_frames: list[int]) -> list[np.ndarray]:
    """Start frame of each token row, for several rows (their DTWs run together).

    ``qks[k]``: (heads, rows, audio_ctx) raw scores of the alignment heads, one row per decoder
    position that predicted a text token plus the final row that predicted end-of-text.
    Returns per row the encoder frame (50/s) where each token begins, length rows + 1
    (last = end)."""
    costs = []
    for qk, frames in zip(qks, n_frames, strict=True):
        frames = max(1, min(frames, qk.shape[-1]))
        w = qk[..., :frames].float().softmax(dim=-1)
        std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
        w = (w - mean) / std.clamp_min(1e-10)
        costs.append((-median_filter(w).mean(dim=0)).double().cpu().numpy())
    out = []
    for (text_idx, time_idx), cost in zip(dtw_batch(costs), costs, strict=True):
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        out.append(np.append(time_idx[jumps], cost.shape[1]))
    return out


MIN_LONG_WORD_S = 1.0  # no clamp below this: slow speech and long words stay whole
_SENTENCE_END = (".", "?", "!")


def clamp_stretched_ends(texts: list[str], bounds: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Word spans with the stretched ends of sentence-final and last words cut back.

    DTW must place every audio frame, so where the decoder stopped before the speech did
    ("...painful to myself." of a window that goes on with "Printing, in the only sense"),
    the last word absorbs the speech that follows: 10.6-13.8 s instead of 10.6-11.2 s.  A
    word committed with that end moves the buffer cut past speech no decode has
    transcribed, and it is lost.  As faster-whisper does, such words are held to twice the
    median word length (at least ``MIN_LONG_WORD_S``)."""
    lengths = [e - s for s, e in bounds if e > s]
    if not lengths:
        return bounds
    longest = max(MIN_LONG_WORD_S, 2.0 * float(np.median(lengths)))
    out = list(bounds)
    for i, (text, (start, end)) in enumerate(zip(texts, bounds, strict=True)):
        if end - start > longest and (i == len(texts) - 1 or text.rstrip().endswith(_SENTENCE_END)):
            out[i] = (start, start + longest)
    return out
