"""Spurious gaps: accuracy where a cue is strongest minus accuracy where it is weakest (docs/methods.md §6).

All gaps are in percentage POINTS (accuracy 0-100). For a class with `n_c` scored images the sets
are High = its top-`k_c` images and Low = its bottom-`k_c` images with `k_c = min(k, ⌊n_c / 2⌋)`, so
High and Low never share an image. (The original code took the k lowest of its top-1000 list as
"High", which for any class of at most 1000 images is exactly Low: its gaps were always 0.)

A positive gap means the cue helps the model ("clarifying"), a negative one that it hurts
("confusing"). Images are ordered by (score, then index), so equal scores split between High and Low
reproducibly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import numpy as np


@dataclass
class GapResult:
    """Per-class and overall spurious gaps; every accuracy and gap is in percentage points.

    Attributes:
        per_class: class -> acc(High) − acc(Low) for each ranked class (≥ 2 scored images).
        high: class -> int64 [k_c] dataset indices of High, highest score first.
        low: class -> int64 [k_c] dataset indices of Low, lowest score first.
        n: class -> number of scored images n_c.
        k: class -> the clamped set size k_c = min(k, ⌊n_c / 2⌋).
        acc_high, acc_low: class -> accuracy on High / Low.
        pooled: the gap over the union of all classes' High and Low sets (the original figure).
        pooled_acc_high, pooled_acc_low: accuracy on that union's High / Low parts.
        macro: unweighted mean of the per-class gaps.
        skipped: classes with scores but fewer than 2 scored images (no High/Low possible).
    """

    per_class: dict[int, float] = field(default_factory=dict)
    high: dict[int, np.ndarray] = field(default_factory=dict)
    low: dict[int, np.ndarray] = field(default_factory=dict)
    n: dict[int, int] = field(default_factory=dict)
    k: dict[int, int] = field(default_factory=dict)
    acc_high: dict[int, float] = field(default_factory=dict)
    acc_low: dict[int, float] = field(default_factory=dict)
    pooled: float = float("nan")
    pooled_acc_high: float = float("nan")
    pooled_acc_low: float = float("nan")
    macro: float = float("nan")
    skipped: list[int] = field(default_factory=list)

    @property
    def classes(self) -> list[int]:
        """Ranked classes with a gap, ascending."""
        return sorted(self.per_class)


def clamped_k(k: int, n: int) -> int:
    """k_c = min(k, ⌊n / 2⌋): the largest set size for which the top and bottom k never overlap."""
    return min(int(k), int(n) // 2)


def _points(correct_subset: np.ndarray) -> float:
    return 100.0 * float(np.mean(correct_subset)) if correct_subset.size else float("nan")


class HighLowSets(NamedTuple):
    """Per ranked class (ascending): High and Low dataset indices, the scored count n_c, and the skipped."""

    high: dict[int, np.ndarray]  # int64 [k_c], highest score first
    low: dict[int, np.ndarray]  # int64 [k_c], lowest score first
    n: dict[int, int]
    skipped: list[int]  # classes with scores but fewer than 2 scored images


def high_low_indices(
    scores: np.ndarray, labels: np.ndarray, k: int = 100, classes: Iterable[int] | None = None
) -> HighLowSets:
    """The index sets of the spurious gap: per class, its k_c highest- and k_c lowest-scored images.

    Args as `spurious_gap` (NaN scores are not ranked); k_c = min(k, ⌊n_c / 2⌋).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be 1-D and equal")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scored = ~np.isnan(scores)
    if classes is not None:
        scored &= np.isin(labels, np.asarray(list(classes)))
    candidates = np.flatnonzero(scored)
    # One sort for all classes: by class, then score, then index (the last key of lexsort is primary).
    order = candidates[np.lexsort((candidates, scores[candidates], labels[candidates]))]
    class_ids, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    sets = HighLowSets({}, {}, {}, [])
    for class_index, start, n_c in zip(class_ids.tolist(), starts.tolist(), counts.tolist()):
        k_c = clamped_k(k, n_c)
        if k_c == 0:
            sets.skipped.append(class_index)
            continue
        ranked = order[start : start + n_c]  # low -> high score
        sets.low[class_index] = ranked[:k_c]
        sets.high[class_index] = ranked[n_c - k_c :][::-1]  # highest score first
        sets.n[class_index] = n_c
    return sets


def spurious_gap(
    correct: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    k: int = 100,
    classes: Iterable[int] | None = None,
) -> GapResult:
    """Spurious gap of every ranked class, pooled and macro-averaged.

    Args:
        correct: bool [N], whether the model classifies each image correctly.
        scores: float [N], spuriosity s(x); NaN marks images that are not ranked (their class has
            no spurious feature, or they are outside the split being measured).
        labels: int [N], true classes; High/Low are formed within each class.
        k: requested images per side (the original figure used 100); clamped per class to
            ⌊n_c / 2⌋.
        classes: restrict to these classes (default: every class with a scored image).

    Returns:
        `GapResult` (points). Classes with fewer than 2 scored images are listed in `skipped`. With
        no ranked class at all, `pooled` and `macro` are NaN.
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.shape != np.shape(scores):
        raise ValueError(f"correct {correct.shape} and scores {np.shape(scores)} must be equal")
    sets = high_low_indices(scores, labels, k, classes)
    result = GapResult(high=sets.high, low=sets.low, n=sets.n, skipped=sets.skipped)
    for class_index, high in sets.high.items():
        low = sets.low[class_index]
        result.k[class_index] = len(high)
        result.acc_high[class_index] = _points(correct[high])
        result.acc_low[class_index] = _points(correct[low])
        result.per_class[class_index] = result.acc_high[class_index] - result.acc_low[class_index]

    if result.per_class:
        all_high = np.concatenate(list(result.high.values()))
        all_low = np.concatenate(list(result.low.values()))
        result.pooled_acc_high = _points(correct[all_high])
        result.pooled_acc_low = _points(correct[all_low])
        result.pooled = result.pooled_acc_high - result.pooled_acc_low
        result.macro = float(np.mean(list(result.per_class.values())))
    return result


def feature_gaps(
    correct: np.ndarray,
    features: np.ndarray,
    class_mask: np.ndarray,
    feature_ids: Iterable[int],
    k: int = 25,
) -> np.ndarray:
    """Single-feature triage gaps of one class, for many features at once.

    For each feature d: accuracy on the class's top-k_c images by r_d minus accuracy on its
    bottom-k_c, k_c = min(k, ⌊n_c / 2⌋) (the original discovery step used k = 25 and flagged
    |gap| ≥ 20 points).

    Args:
        correct: bool [N].
        features: float [N, D], pooled features (a memory map is fine: only the class's rows and
            the requested columns are read). Must be finite on the class's rows.
        class_mask: bool [N], the class's images (usually all images labelled c).
        feature_ids: the F features to score.
        k: requested images per side.

    Returns:
        float64 [F], gaps in percentage points; all NaN when the class has fewer than 2 images.
        Equal activations (common: many images leave a ReLU feature at 0) are ordered by index.
    """
    correct = np.asarray(correct, dtype=bool)
    class_mask = np.asarray(class_mask, dtype=bool)
    features = np.asanyarray(features)  # keeps a memory map mapped (no copy)
    feature_ids = np.asarray(list(feature_ids), dtype=np.int64)
    if correct.shape != class_mask.shape or features.shape[0] != correct.shape[0]:
        raise ValueError(f"correct {correct.shape}, class_mask {class_mask.shape} and features {features.shape} disagree")
    rows = np.flatnonzero(class_mask)
    if feature_ids.size == 0 or clamped_k(k, rows.size) == 0:
        return np.full(feature_ids.size, np.nan)
    return triage_gaps(correct[rows], features[np.ix_(rows, feature_ids)], k=k)


def triage_gaps(class_correct: np.ndarray, activations: np.ndarray, k: int = 25) -> np.ndarray:
    """`feature_gaps` on one class's rows already read: correct [n_c], activations [n_c, F] -> gaps [F].

    Rows must be in dataset order (ties between equal activations go to the earlier row).
    """
    class_correct = np.asarray(class_correct, dtype=np.float64)
    activations = np.asarray(activations, dtype=np.float64)
    if activations.ndim != 2 or activations.shape[0] != class_correct.shape[0]:
        raise ValueError(f"activations {activations.shape} must be [n_c, F] with n_c = {class_correct.shape[0]}")
    n_c = class_correct.shape[0]
    k_c = clamped_k(k, n_c)
    if activations.shape[1] == 0 or k_c == 0:
        return np.full(activations.shape[1], np.nan)
    if not np.all(np.isfinite(activations)):
        raise ValueError("features must be finite on the class's images")
    order = np.argsort(activations, axis=0, kind="stable")  # [n_c, F], low -> high per feature
    acc_low = class_correct[order[:k_c]].mean(axis=0)
    acc_high = class_correct[order[n_c - k_c :]].mean(axis=0)
    return 100.0 * (acc_high - acc_low)


def feature_gap(correct: np.ndarray, activation: np.ndarray, class_mask: np.ndarray, k: int = 25) -> float:
    """Single-feature triage gap of one class, in percentage points (see `feature_gaps`).

    Args:
        correct: bool [N].
        activation: float [N], one feature's r_d over the dataset; NaN entries are left out.
        class_mask: bool [N], the class's images.
        k: requested images per side, clamped to ⌊n_c / 2⌋.

    Returns:
        acc(top-k_c by r_d) − acc(bottom-k_c), NaN when fewer than 2 images remain.
    """
    activation = np.asarray(activation, dtype=np.float64)
    usable = np.asarray(class_mask, dtype=bool) & ~np.isnan(activation)
    return float(feature_gaps(correct, activation[:, None], usable, [0], k=k)[0])
