"""Batched DTW for word timestamps: the same path for each matrix alone as in a batch."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.whisper.timing import clamp_stretched_ends, dtw_batch


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
