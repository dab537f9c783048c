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


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment path through ``cost`` (N tokens x M frames), vectorised per
    anti-diagonal.  Returns (token_indices, frame_indices) along the path."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        options = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        choice = options.argmin(axis=0)
        acc[i, j] = cost[i - 1, j - 1] + options[choice, np.arange(len(i))]
        trace[i, j] = choice
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


def token_boundaries(qk: torch.Tensor, n_frames: int) -> np.ndarray:
    """Start frame of each token row.

    ``qk``: (heads, rows, audio_ctx) raw scores of the alignment heads, one row per decoder
    position that predicted a text token plus the final row that predicted end-of-text.
    Returns the encoder frame (50/s) where each row begins, length rows + 1 (last = end).
    """
    n_frames = max(1, min(n_frames, qk.shape[-1]))
    w = qk[..., :n_frames].float().softmax(dim=-1)
    std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
    w = (w - mean) / std.clamp_min(1e-10)
    matrix = median_filter(w).mean(dim=0)
    text_idx, time_idx = dtw((-matrix).double().cpu().numpy())
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    starts = time_idx[jumps]
    return np.append(starts, n_frames)
