"""Word timestamps from cross-attention alignment heads (DTW), as in Whisper's timing.py."""

from __future__ import annotations

import numpy as np
import torch

MEDIAN_FILTER_WIDTH = 7


def dtw_moves(cost: torch.Tensor) -> np.ndarray:
    """The DTW's forward pass over several cost matrices at once (``cost``: matrices x N
    tokens x M frames, float64, on any device; a matrix smaller than that is padded right
    and below, where no path of its own reaches, with anything): per matrix, which move
    reached each cell (0 diagonal, 1 up, 2 left), on the host.

    One token row at a time: within a row a cell depends on the one left of it, and that
    chain is a prefix minimum (``acc[i, j] = S[j] + min_k<=j (best[k] - S[k-1])``, S the
    running sum of the row's costs, ``best[k]`` the cheaper of the two cells above-left and
    above), so each row is a handful of vectorised calls: ~N calls per batch instead of one
    per anti-diagonal (N + M, ~1500 for a 30 s window; that loop was half of a GPU batch's
    time).  It runs where the costs are (on a GPU: no host time, and only the int8 moves are
    copied back).  Ties go diagonal, then up, then left, as in Whisper."""
    b, n, m = cost.shape
    inf_col = torch.full((b, 1), torch.inf, dtype=cost.dtype, device=cost.device)
    above = torch.cat([torch.zeros_like(inf_col), inf_col.expand(b, m)], dim=1)  # acc[0, :]
    trace = torch.zeros(b, n + 1, m + 1, dtype=torch.int8, device=cost.device)
    for i in range(1, n + 1):
        diag, up = above[:, :-1], above[:, 1:]
        best = torch.minimum(diag, up)
        run = torch.cumsum(cost[:, i - 1], dim=1)
        row = run + torch.cummin(best - (run - cost[:, i - 1]), dim=1).values
        left = torch.cat([inf_col, row[:, :-1]], dim=1)
        trace[:, i, 1:] = torch.where(left < best, 2, torch.where(diag <= up, 0, 1)).to(torch.int8)
        above = torch.cat([inf_col, row], dim=1)
    return trace.cpu().numpy()


def token_starts(trace: np.ndarray, counts: list[int], frames: list[int]) -> list[np.ndarray]:
    """Per matrix of ``dtw_moves`` (``trace``), the frame where each token's stretch of the path from
    (counts[k], frames[k]) back to the start begins (tokens the path never reaches left out),
    then frames[k].  All matrices are walked back together, one token row per step (a walk
    per matrix cost ~0.6 ms a row on a 2-core host)."""
    b, _, width = trace.shape
    rows = np.arange(b)
    i, j = np.array(counts), np.array(frames)
    starts = np.full((b, max(1, int(i.max()))), -1, dtype=np.int64)
    columns = np.arange(1, width)
    while True:
        live = (i > 0) & (j > 0)
        if not live.any():
            break
        line = trace[rows, i, 1:]  # each matrix's current token row
        turns = (line != 2) & (columns[None, :] <= j[:, None])  # where the path leaves it
        last = width - 1 - np.argmax(turns[:, ::-1], axis=1)  # the last turn's column
        k = np.where(turns.any(axis=1), last, 1)
        starts[rows[live], i[live] - 1] = k[live] - 1
        diagonal = trace[rows, i, k] == 0
        j = np.where(live, np.where(diagonal, k - 1, k), j)
        i = np.where(live, i - 1, i)
    return [np.append(s[:n][s[:n] >= 0], m) for s, n, m in zip(starts, counts, frames, strict=True)]


# alignment scores normalised per chunk of rows: the median filter's window copy is 7x a
# chunk, so a chunk holds at most this many scores (rows x heads x tokens x frames)
_CHUNK_SCORES = 8_000_000


def token_boundaries(
    align: torch.Tensor, rows: list[int], starts: list[int], counts: list[int], n_frames: list[int]
) -> list[np.ndarray]:
    """Start frame of each token, for several rows of a batch (their DTWs run together).

    ``align``: (batch, heads, positions, audio_ctx) raw scores of the alignment heads, one
    position per decoder step; row ``rows[k]``'s tokens are the ``counts[k]`` positions from
    ``starts[k]`` (one per position that predicted a text token plus the final one that
    predicted end-of-text) over its first ``n_frames[k]`` encoder frames.  Returns per row
    the encoder frame (50/s) where each token begins, length counts + 1 (last = end).

    Rows are normalised, median-filtered and their DTW forward passes run together on the
    scores' device (one copy to the host, of the DTW's moves, not one per row: on a GPU each
    copy is a sync), each as it would be alone: a row's softmax and filter see only its own
    frames, its mean only its own tokens."""
    if not rows:
        return []
    device = align.device
    frames = [max(1, min(f, align.shape[-1])) for f in n_frames]
    heads = align.shape[1]
    # every row's DTW cost, padded (what lies past a row's own tokens and frames is never read)
    costs = torch.zeros(len(rows), max(counts), max(frames), dtype=torch.float64, device=device)
    by_position = align.transpose(1, 2)  # (batch, positions, heads, audio_ctx)
    at = 0
    while at < len(rows):
        size, n, f = 1, counts[at], frames[at]
        while at + size < len(rows):  # grow the chunk while its padded scores fit
            n2, f2 = max(n, counts[at + size]), max(f, frames[at + size])
            if (size + 1) * heads * n2 * f2 > _CHUNK_SCORES:
                break
            size, n, f = size + 1, n2, f2
        chunk = slice(at, at + size)
        at += size
        count = torch.tensor(counts[chunk], device=device)
        width = torch.tensor(frames[chunk], device=device)
        pos = torch.tensor(starts[chunk], device=device)[:, None] + torch.arange(n, device=device)
        pick = torch.tensor(rows[chunk], device=device)[:, None]
        x = by_position[pick, pos.clamp_max(align.shape[2] - 1), :, :f].transpose(1, 2).float()
        real_frame = (torch.arange(f, device=device) < width[:, None])[:, None, None, :]
        real_token = (torch.arange(n, device=device) < count[:, None])[:, None, :, None]
        w = x.masked_fill(~real_frame, -torch.inf).softmax(dim=-1)
        tokens = count[:, None, None, None].to(w.dtype)
        mean = (w * real_token).sum(dim=-2, keepdim=True) / tokens
        std = (((w - mean) * real_token) ** 2).sum(dim=-2, keepdim=True).div(tokens).sqrt()
        w = (w - mean) / std.clamp_min(1e-10)
        costs[chunk, :n, :f] = -median_filter_rows(w, width).mean(dim=1)
    return token_starts(dtw_moves(costs), counts, frames)


def median_filter_rows(
    x: torch.Tensor, frames: torch.Tensor, width: int = MEDIAN_FILTER_WIDTH
) -> torch.Tensor:
    """Median over a sliding window on the last axis of each row of ``x`` (rows, ...,
    frames), over its first ``frames[k]`` frames, reflect-padded at that row's own end (what
    lies past it is left as any value), as Whisper filters its alignment scores; rows of at
    most ``width // 2`` frames are returned as they are."""
    pad = width // 2
    at = torch.arange(-pad, x.shape[-1] + pad, device=x.device).abs()[None, :]
    last = (frames[:, None] - 1).clamp_min(0)
    source = torch.where(at > last, 2 * last - at, at).clamp(min=0).minimum(last)  # reflect
    source = source.view(x.shape[0], *([1] * (x.dim() - 2)), -1).expand(*x.shape[:-1], -1)
    padded = x.gather(-1, source)
    filtered = _median7(padded) if width == 7 else padded.unfold(-1, width, 1).median(dim=-1).values
    short = (frames <= pad).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(short, x, filtered)


# Devillard's median-of-7 selection network ("Fast median search", 1998): after these 13
# compare-exchanges the 4th value is the median.  Over 7 shifted views it is 13 elementwise
# min/max pairs instead of sorting every 7-frame window: the same values, 15 -> 1 ms for a
# 20 s window's scores on one core (README, Benchmarks, stop 23)
_MEDIAN7 = (
    (0, 5),
    (0, 3),
    (1, 6),
    (2, 4),
    (0, 1),
    (3, 5),
    (2, 6),
    (2, 3),
    (3, 6),
    (4, 5),
    (1, 4),
    (1, 3),
    (3, 4),
)


def _median7(padded: torch.Tensor) -> torch.Tensor:
    """The sliding median of 7 along the last axis (its length n + 6 -> n)."""
    n = padded.shape[-1] - 6
    v = [padded[..., i : i + n] for i in range(7)]
    for a, b in _MEDIAN7:
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return v[3]


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
