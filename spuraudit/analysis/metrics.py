"""Accuracy-type metrics. Accuracies are in percentage POINTS (0-100); AUROC is a FRACTION (0-1).

Pure NumPy: scikit-learn is deliberately not imported (it takes seconds to import and the audit
pages import this module).
"""

from __future__ import annotations

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


def worst_group_accuracy(correct: np.ndarray, group_ids: np.ndarray) -> float:
    """Minimum of `group_accuracies` in points; NaN when there is no image."""
    per_group = group_accuracies(correct, group_ids)
    return min(per_group.values()) if per_group else float("nan")


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
