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
    as (token_indices, frame_indices), in one pass over the anti-diagonals: one set of numpy
    calls for the whole batch instead of one per row (per-call overhead was most of a GPU
    batch's time).  Each matrix is padded with +inf; a cell depends only on cells above and
    left of it, so no row's path sees another's padding."""
    if not costs:
        return []
    b = len(costs)
    n = max(c.shape[0] for c in costs)
    m = max(c.shape[1] for c in costs)
    cost = np.full((b, n, m), np.inf)
    for k, c in enumerate(costs):
        cost[k, : c.shape[0], : c.shape[1]] = c
    acc = np.full((b, n + 1, m + 1), np.inf)
    acc[:, 0, 0] = 0.0
    trace = np.full((b, n + 1, m + 1), -1, dtype=np.int8)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        options = np.stack([acc[:, i - 1, j - 1], acc[:, i - 1, j], acc[:, i, j - 1]])  # (3, b, len)
        choice = options.argmin(axis=0)
        acc[:, i, j] = cost[:, i - 1, j - 1] + np.take_along_axis(options, choice[None], axis=0)[0]
        trace[:, i, j] = choice
    return [_backtrace(trace[k], c.shape[0], c.shape[1]) for k, c in enumerate(costs)]


def _backtrace(trace: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = n, m
    path: list[tuple[int, int]] = []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    arr = np.array(path, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


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
