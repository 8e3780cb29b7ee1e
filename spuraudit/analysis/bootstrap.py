"""Percentile bootstrap confidence intervals for gaps and means (docs/methods.md §6).

Every function takes a `seed` and gives the same interval for the same inputs and seed. Resamples
are drawn all at once (no Python loop over resamples).

For accuracy gaps the resampled quantity is a count of correct predictions: resampling `n` images
with replacement from a set in which `m` are correct gives a number of correct images distributed
exactly as Binomial(n, m / n). Drawing that count directly is the same bootstrap distribution as
drawing an [n_boot, n] matrix of random indices, at O(n_boot) instead of O(n_boot · n) memory, which
matters for the pooled gap over hundreds of classes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

_NAN_INTERVAL = (float("nan"), float("nan"))


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _percentile_interval(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def _resampled_accuracy(
    rng: np.random.Generator, n_correct: np.ndarray, n_total: np.ndarray, n_boot: int
) -> np.ndarray:
    """Bootstrap accuracy (fraction) of the union of several sets, each resampled within itself.

    n_correct, n_total: int [S], correct and total images of each set. Returns float64 [n_boot].
    """
    draws = rng.binomial(n_total[None, :], (n_correct / n_total)[None, :], size=(n_boot, n_total.size))
    return draws.sum(axis=1) / n_total.sum()


def _as_index_list(sets: Mapping[int, np.ndarray] | Sequence[np.ndarray]) -> list[np.ndarray]:
    values = [sets[key] for key in sorted(sets)] if isinstance(sets, Mapping) else list(sets)
    return [np.asarray(v, dtype=np.int64) for v in values]


def bootstrap_pooled_gap_ci(
    correct: np.ndarray,
    high: Mapping[int, np.ndarray] | Sequence[np.ndarray],
    low: Mapping[int, np.ndarray] | Sequence[np.ndarray],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of the pooled gap acc(∪ High) − acc(∪ Low), stratified by class.

    Each class's High and Low sets are resampled within themselves (so every resample keeps each
    class's set sizes, as the pooled figure does), independently of each other.

    Args:
        correct: bool [N].
        high, low: the per-class High and Low index arrays, as class -> int [k_c] (e.g.
            `GapResult.high`) or as a list of arrays.
        n_boot: number of resamples.
        alpha: 1 − confidence level (0.05 gives a 95 % interval).
        seed: random seed.

    Returns:
        (low, high) bounds in percentage points; (NaN, NaN) when High or Low is empty.
    """
    _check_alpha(alpha)
    correct = np.asarray(correct, dtype=bool)
    high_sets = [s for s in _as_index_list(high) if s.size]
    low_sets = [s for s in _as_index_list(low) if s.size]
    if not high_sets or not low_sets:
        return _NAN_INTERVAL
    rng = np.random.default_rng(seed)

    def counts(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([correct[s].sum() for s in sets]), np.array([s.size for s in sets])

    acc_high = _resampled_accuracy(rng, *counts(high_sets), n_boot)
    acc_low = _resampled_accuracy(rng, *counts(low_sets), n_boot)
    return _percentile_interval(100.0 * (acc_high - acc_low), alpha)


def bootstrap_gap_ci(
    correct: np.ndarray,
    high_idx: np.ndarray,
    low_idx: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of one class's gap acc(High) − acc(Low), High and Low resampled independently.

    Args:
        correct: bool [N].
        high_idx, low_idx: int [k] dataset indices of High and Low.
        n_boot, alpha, seed: as in `bootstrap_pooled_gap_ci`.

    Returns:
        (low, high) bounds in percentage points; (NaN, NaN) when either set is empty.
    """
    return bootstrap_pooled_gap_ci(correct, [high_idx], [low_idx], n_boot=n_boot, alpha=alpha, seed=seed)


def bootstrap_mean_ci(
    values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile CI of the mean of `values` (e.g. the macro average of per-class gaps).

    Args:
        values: float [n]; NaN entries are left out.
        n_boot, alpha, seed: as in `bootstrap_pooled_gap_ci`.

    Returns:
        (low, high) in the units of `values`; (NaN, NaN) when no value is left. Uses one
        [n_boot, n] random-index matrix (n is small here: one value per class).
    """
    _check_alpha(alpha)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return _NAN_INTERVAL
    rng = np.random.default_rng(seed)
    resample = rng.integers(0, values.size, size=(n_boot, values.size))
    return _percentile_interval(values[resample].mean(axis=1), alpha)


def bootstrap_gap_cis(
    correct: np.ndarray,
    high: Mapping[int, np.ndarray] | Sequence[np.ndarray],
    low: Mapping[int, np.ndarray] | Sequence[np.ndarray],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    max_elements: int = 1 << 22,
) -> np.ndarray:
    """Percentile CIs of many classes' gaps acc(High_c) − acc(Low_c) at once.

    The same bootstrap as `bootstrap_gap_ci` (High and Low resampled independently, as binomial
    counts), with every class's resamples drawn in one array operation: [n_boot, classes] per
    block of classes, blocks sized so an array holds at most `max_elements` values. One generator
    seeded with `seed` serves all classes, so a class's interval depends on the classes drawn
    before it; intervals are reproducible for the same inputs and seed.

    Args:
        correct: bool [N].
        high, low: per-class High and Low index arrays (class -> int [k_c], or lists), aligned.
        n_boot, alpha, seed: as in `bootstrap_pooled_gap_ci`.

    Returns:
        float64 [classes, 2] (low, high) bounds in percentage points; NaN rows where a set is empty.
    """
    _check_alpha(alpha)
    correct = np.asarray(correct, dtype=bool)
    high_sets, low_sets = _as_index_list(high), _as_index_list(low)
    if len(high_sets) != len(low_sets):
        raise ValueError(f"{len(high_sets)} High sets but {len(low_sets)} Low sets")
    k_high = np.array([s.size for s in high_sets], dtype=np.int64)
    k_low = np.array([s.size for s in low_sets], dtype=np.int64)
    right_high = np.array([correct[s].sum() for s in high_sets], dtype=np.int64)
    right_low = np.array([correct[s].sum() for s in low_sets], dtype=np.int64)
    out = np.full((len(high_sets), 2), np.nan)
    usable = np.flatnonzero((k_high > 0) & (k_low > 0))
    rng = np.random.default_rng(seed)
    block = max(1, int(max_elements) // max(int(n_boot), 1))
    for start in range(0, usable.size, block):
        cls = usable[start:start + block]
        acc_high = rng.binomial(k_high[cls], right_high[cls] / k_high[cls], size=(n_boot, cls.size)) / k_high[cls]
        acc_low = rng.binomial(k_low[cls], right_low[cls] / k_low[cls], size=(n_boot, cls.size)) / k_low[cls]
        out[cls] = np.quantile(100.0 * (acc_high - acc_low), [alpha / 2.0, 1.0 - alpha / 2.0], axis=0).T
    return out
