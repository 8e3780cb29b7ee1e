"""Accuracy-type metrics. Accuracies are in percentage POINTS (0-100); AUROC is a FRACTION (0-1).

Pure NumPy: scikit-learn is deliberately not imported (it takes seconds to import and the audit
pages import this module).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def accuracy(correct: np.ndarray) -> float:
    """Share of True entries of bool [N] `correct`, in points; NaN for an empty array."""
    correct = np.asarray(correct, dtype=bool)
    return 100.0 * float(correct.mean()) if correct.size else float("nan")


def group_accuracies(correct: np.ndarray, group_ids: np.ndarray) -> dict[int, float]:
    """Accuracy of every group present, in points.

    Args:
        correct: bool [N].
        group_ids: int [N], the group of each image (e.g. a (class, attribute) cell index).

    Returns:
        group id -> accuracy, for the groups that occur, in ascending group order.
    """
    correct = np.asarray(correct, dtype=bool)
    group_ids = np.asarray(group_ids)
    if correct.shape != group_ids.shape:
        raise ValueError(f"correct {correct.shape} and group_ids {group_ids.shape} must have the same shape")
    groups, inverse = np.unique(group_ids, return_inverse=True)
    n_correct = np.bincount(inverse, weights=correct, minlength=groups.size)
    n_total = np.bincount(inverse, minlength=groups.size)
    return {int(g): 100.0 * float(c / n) for g, c, n in zip(groups, n_correct, n_total)}


def worst_group(correct: np.ndarray, group_ids: np.ndarray) -> tuple[int | None, float]:
    """(group id, accuracy in points) of the group with the lowest accuracy; the lowest id wins a tie.
    (None, NaN) when there is no image."""
    per_group = group_accuracies(correct, group_ids)
    if not per_group:
        return None, float("nan")
    group = min(per_group, key=per_group.get)
    return group, per_group[group]


def worst_group_accuracy(correct: np.ndarray, group_ids: np.ndarray) -> float:
    """Minimum of `group_accuracies` in points; NaN when there is no image."""
    return worst_group(correct, group_ids)[1]


def weighted_group_accuracy(group_accuracy: Mapping[Any, float], shares: Mapping[Any, float]) -> float:
    """Group accuracies averaged with weights `shares` (e.g. each group's share of the training split, as
    DFR-style papers report), renormalised over the groups present; NaN when their weights sum to 0."""
    weight = sum(shares.get(g, 0.0) for g in group_accuracy)
    if weight <= 0:
        return float("nan")
    return sum(shares.get(g, 0.0) * acc for g, acc in group_accuracy.items()) / weight


def high_low_gap(correct: np.ndarray, high: np.ndarray, low: np.ndarray) -> tuple[float, float, float]:
    """(accuracy on High, accuracy on Low, their difference), in points, for index sets into bool [N]
    `correct`; an empty set's accuracy is NaN (and so is the gap)."""
    correct = np.asarray(correct, dtype=bool)
    acc_high = accuracy(correct[np.asarray(high, dtype=np.int64)])
    acc_low = accuracy(correct[np.asarray(low, dtype=np.int64)])
    return acc_high, acc_low, acc_high - acc_low


def ranking_bins(n: int) -> int:
    """How many bins the accuracy along a ranking of `n` images uses: about 20 images a bin, 2 to 10."""
    return min(10, max(2, n // 20))


def accuracy_along_ranking(correct_in_order: np.ndarray, bins: int | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy in equal-count bins along a ranking: where does the model start to fail?

    Args:
        correct_in_order: bool [n], correctness of the images in ranking order (lowest spuriosity first).
        bins: number of bins (default `ranking_bins(n)`); image i of n falls in the bin of its position
            quantile (bins closed on the right, as pandas' `qcut` of the positions).

    Returns:
        (start, end, accuracy): float [B] each; start/end are the bin's span as fractions of the ranking
        (0-1), accuracy is in points (NaN for an empty bin). All empty when n == 0.
    """
    correct = np.asarray(correct_in_order, dtype=bool).ravel()
    n = correct.size
    if n == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    bins = ranking_bins(n) if bins is None else int(bins)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    inner_edges = (n - 1) * np.arange(1, bins) / bins  # position quantiles between the bins
    bin_of = np.searchsorted(inner_edges, np.arange(n), side="left")
    hits = np.bincount(bin_of, weights=correct, minlength=bins)
    totals = np.bincount(bin_of, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = 100.0 * hits / totals
    edges = np.arange(bins + 1) / bins
    return edges[:-1], edges[1:], acc


def per_class_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """float64 [C]: accuracy of the images labelled c, in points; NaN for a class with no image."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} must have the same shape")
    n_total = np.bincount(labels, minlength=num_classes)[:num_classes].astype(np.float64)
    n_correct = np.bincount(labels, weights=labels == preds, minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * n_correct / n_total


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of float [n] `values`, tied values sharing the mean of their ranks: float64 [n]."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Each run of equal values gets the mean of the first and last rank it spans.
    new_run = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_end = np.r_[run_start[1:], values.size]  # exclusive
    run_rank = (run_start + 1 + run_end) / 2.0  # mean of ranks run_start+1 .. run_end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = run_rank[run_id]
    return ranks


def auroc(scores: np.ndarray, positive_mask: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for separating positives from negatives, as a FRACTION.

    Computed as the Mann-Whitney U statistic with average ranks for ties (a tied positive/negative
    pair counts 1/2), which equals the trapezoidal ROC area.

    Args:
        scores: float [N], higher = more likely positive. Must not contain NaN.
        positive_mask: bool [N].

    Returns:
        AUROC in [0, 1] (0.5 = chance); NaN when there are no positives or no negatives.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive_mask = np.asarray(positive_mask, dtype=bool).ravel()
    if scores.shape != positive_mask.shape:
        raise ValueError(f"scores {scores.shape} and positive_mask {positive_mask.shape} must have the same length")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    n_positive = int(positive_mask.sum())
    n_negative = positive_mask.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    rank_sum = average_ranks(scores)[positive_mask].sum()
    u_statistic = rank_sum - n_positive * (n_positive + 1) / 2.0
    return float(u_statistic / (n_positive * n_negative))
