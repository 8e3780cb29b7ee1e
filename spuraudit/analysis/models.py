"""Many models on one dataset (docs/methods.md §8): effective robustness and how their gaps agree.

Every model is scored on the same High and Low images of each class (one reference ranking), so the
per-class numbers of different models are comparable. Accuracies and gaps are in percentage points;
correlations are plain coefficients in [-1, 1].
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .metrics import average_ranks


def low_high_accuracy(correct: np.ndarray, high: Mapping[int, np.ndarray], low: Mapping[int, np.ndarray]
                      ) -> tuple[dict[int, float], dict[int, float]]:
    """Per class, accuracy (points) on its Low and on its High images.

    The two coordinates of the effective-robustness plot: a model on the line y = x does as well on
    a class's high-spuriosity images as on its low-spuriosity ones.

    Args:
        correct: bool [N] of one model.
        high, low: class -> dataset indices of its High / Low set (from the reference ranking).

    Returns:
        (class -> accuracy on Low, class -> accuracy on High); NaN for an empty set.
    """
    correct = np.asarray(correct, dtype=bool)

    def points(rows: np.ndarray) -> float:
        rows = np.asarray(rows, dtype=np.int64)
        return 100.0 * float(correct[rows].mean()) if rows.size else float("nan")

    return ({c: points(low[c]) for c in sorted(low)}, {c: points(high[c]) for c in sorted(high)})


def gap_matrix(correct_by_model: Sequence[np.ndarray], high: Mapping[int, np.ndarray],
               low: Mapping[int, np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Per-class gaps acc(High) − acc(Low) in points: float [M, C] over the classes with both sets."""
    classes = sorted(c for c in high if c in low)
    gaps = np.full((len(correct_by_model), len(classes)), np.nan)
    for m, correct in enumerate(correct_by_model):
        acc_low, acc_high = low_high_accuracy(correct, {c: high[c] for c in classes}, {c: low[c] for c in classes})
        gaps[m] = [acc_high[c] - acc_low[c] for c in classes]
    return gaps, classes


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    scale = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / scale) if scale > 0 else float("nan")


def pairwise_correlation(values: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Correlation of every pair of rows of `values` [M, C], over the columns finite in both rows.

    Pearson on the values, Spearman as Pearson on their average ranks (ties share a rank). A pair with
    fewer than 3 shared columns, or a row without spread, gets NaN; the diagonal is 1 where a row has
    spread.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be [models, classes], got shape {values.shape}")
    m = values.shape[0]
    out = np.full((m, m), np.nan)
    for i in range(m):
        for j in range(i, m):
            shared = np.isfinite(values[i]) & np.isfinite(values[j])
            if shared.sum() < 3:
                continue
            a, b = values[i, shared], values[j, shared]
            if method == "spearman":
                a, b = average_ranks(a), average_ranks(b)
            out[i, j] = out[j, i] = _pearson(a, b)
    return out
