"""Bootstrap intervals: they hold the point estimate, are seeded, and match index resampling."""

from __future__ import annotations

import numpy as np

from spuraudit.analysis import bootstrap_gap_ci, bootstrap_mean_ci, bootstrap_pooled_gap_ci, spurious_gap

CORRECT = np.array([True] * 14 + [False] * 6 + [True] * 8 + [False] * 12)
HIGH = np.arange(20)  # 70 % right
LOW = np.arange(20, 40)  # 40 % right


def test_gap_ci_contains_estimate_and_is_reproducible():
    estimate = 100.0 * (CORRECT[HIGH].mean() - CORRECT[LOW].mean())
    low, high = bootstrap_gap_ci(CORRECT, HIGH, LOW, n_boot=2000, seed=3)
    assert low < estimate < high
    assert (low, high) == bootstrap_gap_ci(CORRECT, HIGH, LOW, n_boot=2000, seed=3)
    assert (low, high) != bootstrap_gap_ci(CORRECT, HIGH, LOW, n_boot=2000, seed=4)


def test_gap_ci_matches_index_resampling():
    rng = np.random.default_rng(0)
    n_boot = 20000
    high_draws = CORRECT[HIGH][rng.integers(0, HIGH.size, (n_boot, HIGH.size))].mean(1)
    low_draws = CORRECT[LOW][rng.integers(0, LOW.size, (n_boot, LOW.size))].mean(1)
    expected = np.quantile(100 * (high_draws - low_draws), [0.025, 0.975])
    np.testing.assert_allclose(bootstrap_gap_ci(CORRECT, HIGH, LOW, n_boot=n_boot, seed=1), expected, atol=2.5)


def test_degenerate_and_empty_sets():
    assert bootstrap_gap_ci(np.ones(4, bool), [0, 1], [2, 3]) == (0.0, 0.0)
    assert all(np.isnan(bootstrap_gap_ci(CORRECT, HIGH, [])))


def test_pooled_ci_contains_pooled_gap():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 30)
    scores = rng.random(120)
    correct = rng.random(120) < 0.3 + 0.5 * scores  # more spurious -> more often right
    result = spurious_gap(correct, scores, labels, k=10)
    low, high = bootstrap_pooled_gap_ci(correct, result.high, result.low, n_boot=2000, seed=0)
    assert low < result.pooled < high
    assert (low, high) == bootstrap_pooled_gap_ci(correct, result.high, result.low, n_boot=2000, seed=0)
    # one class alone, passed as a list, equals the single-class interval
    assert bootstrap_pooled_gap_ci(correct, [result.high[1]], [result.low[1]], seed=5) == bootstrap_gap_ci(
        correct, result.high[1], result.low[1], seed=5
    )


def test_mean_ci():
    assert bootstrap_mean_ci(np.array([2.0, 2.0, 2.0])) == (2.0, 2.0)
    low, high = bootstrap_mean_ci(np.array([1.0, 2.0, np.nan, 3.0, 4.0, 5.0]), n_boot=2000, seed=0)
    assert 1.0 <= low < 3.0 < high <= 5.0
    assert (low, high) == bootstrap_mean_ci(np.array([1.0, 2.0, np.nan, 3.0, 4.0, 5.0]), n_boot=2000, seed=0)
    assert all(np.isnan(bootstrap_mean_ci(np.array([np.nan]))))
