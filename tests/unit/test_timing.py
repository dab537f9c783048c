"""Batched DTW for word timestamps: the same path for each matrix alone as in a batch."""

from __future__ import annotations

import numpy as np

from deployments.whisper.timing import dtw_batch


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
