"""Batched DTW for word timestamps: the same path for each matrix alone as in a batch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deployments.whisper import timing
from deployments.whisper.timing import (
    clamp_stretched_ends,
    dtw_moves,
    median_filter_rows,
    token_boundaries,
    token_starts,
)


def padded(costs: list[np.ndarray]) -> torch.Tensor:
    """Cost matrices in one (matrices, N, M) float64 tensor, zeros past each one's size."""
    cost = torch.zeros(len(costs), max(c.shape[0] for c in costs), max(c.shape[1] for c in costs))
    for k, c in enumerate(costs):
        cost[k, : c.shape[0], : c.shape[1]] = torch.from_numpy(c)
    return cost.double()


def backtrace(trace: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole path ending at (n, m) through one matrix's moves, as (token_indices,
    frame_indices): the reference the batched walk is checked against."""
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


def dtw_batch(costs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each matrix's path, the forward passes run together."""
    if not costs:
        return []
    trace = dtw_moves(padded(costs))
    return [backtrace(trace[k], c.shape[0], c.shape[1]) for k, c in enumerate(costs)]


def brute_force_cost(cost: np.ndarray) -> float:
    """Best monotonic path cost by plain dynamic programming (the reference)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    return float(acc[n, m])


def test_batched_paths_are_optimal_and_unaffected_by_padding() -> None:
    rng = np.random.default_rng(1)
    costs = [rng.random((int(rng.integers(1, 12)), int(rng.integers(1, 40)))) for _ in range(6)]
    batch = dtw_batch(costs)
    for cost, (ti, fi) in zip(costs, batch, strict=True):
        alone = dtw_batch([cost])[0]
        assert np.array_equal(ti, alone[0]) and np.array_equal(fi, alone[1])
        n, m = cost.shape
        assert (ti[0], fi[0]) == (0, 0) and (ti[-1], fi[-1]) == (n - 1, m - 1)
        assert np.all(np.diff(ti) >= 0) and np.all(np.diff(fi) >= 0)  # monotonic
        assert abs(float(cost[ti, fi].sum()) - brute_force_cost(cost)) < 1e-9
    assert dtw_batch([]) == []


def test_stretched_sentence_ends_and_last_words_are_cut_back() -> None:
    texts = [" If", " the", " reader", " stopped.", " Then", " it", " went", " on"]
    bounds = [(0.0, 0.3), (0.3, 0.5), (0.5, 0.8), (0.8, 4.0), (4.0, 4.2), (4.2, 6.5), (6.5, 6.7), (6.7, 9.0)]
    out = clamp_stretched_ends(texts, bounds)
    assert out[3] == pytest.approx((0.8, 1.8))  # a sentence end: 1 s at least (twice the median is less)
    assert out[5] == (4.2, 6.5)  # a long word inside a sentence is left alone
    assert out[7] == pytest.approx((6.7, 7.7))  # the last word
    assert [s for s, _ in out] == [s for s, _ in bounds]  # starts never move


def test_long_words_at_a_slow_pace_are_kept() -> None:
    bounds = [(0.0, 1.5), (1.5, 3.2), (3.2, 4.9)]  # median 1.7 s: up to 3.4 s is a word
    assert clamp_stretched_ends([" Slowly.", " spoken.", " words."], bounds) == bounds


def test_batched_token_starts_are_where_each_path_enters_a_token() -> None:
    """The batched walk back gives, per matrix, the first frame of each token on the path
    ``dtw_batch`` finds for it alone (tokens the path skips left out), then M."""
    rng = np.random.default_rng(2)
    shapes = [(1, 1), (1, 9), (7, 1), (5, 5), (12, 40), (30, 35), (3, 60)]
    costs = [rng.random(shape) for shape in shapes]
    costs.append(np.zeros((6, 20)))  # every path ties: the tie order decides
    shapes = [c.shape for c in costs]
    walked = token_starts(dtw_moves(padded(costs)), [n for n, _ in shapes], [m for _, m in shapes])
    for cost, starts in zip(costs, walked, strict=True):
        tokens, frames = dtw_batch([cost])[0]
        first = np.pad(np.diff(tokens), (1, 0), constant_values=1).astype(bool)
        assert np.array_equal(starts, np.append(frames[first], cost.shape[1]))


def whisper_median_filter(x: torch.Tensor, width: int = 7) -> torch.Tensor:
    """Whisper's filter of one row (the reference): reflect-padded sliding median."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    y = F.pad(x.reshape(-1, 1, x.shape[-1]), (pad, pad), mode="reflect")
    return y.unfold(-1, width, 1).median(dim=-1).values.reshape(x.shape)


def test_rows_are_median_filtered_each_over_its_own_frames() -> None:
    frames = [1, 3, 4, 5, 17, 40]
    x = torch.randn(len(frames), 2, 3, max(frames))
    out = median_filter_rows(x, torch.tensor(frames))
    for k, f in enumerate(frames):
        assert torch.equal(out[k, ..., :f], whisper_median_filter(x[k, ..., :f]))


def test_the_median_of_seven_network_equals_the_sorted_median_for_every_order() -> None:
    # every ordering of 7 distinct values, and every 0/1 pattern (ties), as sliding windows
    # of one row each: the network's 4th value is the median wherever it sits
    orders = torch.tensor(list(itertools.permutations(range(7))), dtype=torch.float32)
    ties = torch.tensor(list(itertools.product((0.0, 1.0), repeat=7)))
    for rows in (orders, ties):
        assert torch.equal(timing._median7(rows), rows.median(dim=-1, keepdim=True).values)
    # the filter at other widths still takes the sorted median
    x, frames = torch.randn(3, 2, 40), torch.tensor([40, 9, 2])
    for width in (5, 9):
        out = median_filter_rows(x, frames, width)
        for k, f in enumerate(frames.tolist()):
            assert torch.equal(out[k, ..., :f], whisper_median_filter(x[k, ..., :f], width))


def test_batched_token_boundaries_equal_each_row_alone() -> None:
    """Rows of different token counts, start positions and frame counts, in one call and in
    chunks: each gets the boundaries it gets alone."""
    rng = torch.Generator().manual_seed(3)
    align = torch.randn(5, 4, 30, 80, generator=rng)
    rows, starts, counts, frames = [0, 2, 3, 4], [0, 5, 2, 10], [12, 20, 3, 20], [80, 33, 2, 60]
    assert token_boundaries(align, [], [], [], []) == []
    together = token_boundaries(align, rows, starts, counts, frames)
    for k in range(len(rows)):
        # Whisper's recipe on this row's own scores: softmax over its frames, standardised
        # over its tokens, median-filtered, averaged over heads, DTW
        w = align[rows[k], :, starts[k] : starts[k] + counts[k], : frames[k]].softmax(dim=-1)
        std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
        cost = (-whisper_median_filter((w - mean) / std.clamp_min(1e-10)).mean(dim=0)).double().numpy()
        tokens, path = dtw_batch([cost])[0]
        first = np.pad(np.diff(tokens), (1, 0), constant_values=1).astype(bool)
        assert np.array_equal(together[k], np.append(path[first], frames[k]))
        alone = token_boundaries(
            align, rows[k : k + 1], starts[k : k + 1], counts[k : k + 1], frames[k : k + 1]
        )
        assert np.array_equal(together[k], alone[0])
        assert together[k][-1] == frames[k] and len(together[k]) <= counts[k] + 1
    chunked = timing._CHUNK_SCORES
    try:
        timing._CHUNK_SCORES = 4 * 20 * 80  # one row per chunk
        assert all(
            np.array_equal(a, b)
            for a, b in zip(token_boundaries(align, rows, starts, counts, frames), together, strict=True)
        )
    finally:
        timing._CHUNK_SCORES = chunked
