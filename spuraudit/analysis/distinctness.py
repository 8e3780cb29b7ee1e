"""What sets one of a class's top features apart from the others: which image attribute it tracks, and how
much its strongest images are the same as another top feature's.

Two features can both fire on a planted cue; the one worth labelling first is the one whose activation
separates the cue's groups best and whose top images are its own.
"""

from __future__ import annotations

import numpy as np

from .metrics import auroc


def group_separation(activation: np.ndarray, values: np.ndarray) -> tuple[float, str | None]:
    """Which value of a group column a feature fires on, and how cleanly, within a class.

    For each value v present, the AUROC of the activation for "value == v" (1 = every image with v
    activates the feature more than every image without it, 0.5 = chance); the value with the
    highest AUROC is the one the feature tracks.

    Args:
        activation: float [n], the feature on the class's images.
        values: [n], the group column on the same images (any hashable values; NaN/None count as missing
            and are left out).

    Returns:
        (its AUROC, in [0.5, 1], the value it fires on); (NaN, None) when fewer than two values occur.
    """
    activation = np.asarray(activation, dtype=np.float64).ravel()
    values = np.asarray(values, dtype=object).ravel()
    if activation.shape != values.shape:
        raise ValueError(f"activation {activation.shape} and values {values.shape} must have the same length")
    present = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in values], dtype=bool)
    activation, values = activation[present], values[present].astype(str)
    best, which = float("nan"), None
    distinct = np.unique(values)
    if distinct.size < 2:
        return best, which
    for value in distinct:
        area = auroc(activation, values == value)
        if which is None or area > best:
            best, which = area, str(value)
    return best, which


def top_set_overlap(activations: np.ndarray, m: int) -> np.ndarray:
    """Share of each feature's m strongest images that are among another feature's m strongest.

    Args:
        activations: float [n, k], k features on the same n images.
        m: images per top set (clamped to n).

    Returns:
        float [k, k] with entry (i, j) = |top_m(i) ∩ top_m(j)| / m; the diagonal is 1.
    """
    activations = np.asarray(activations, dtype=np.float64)
    if activations.ndim != 2:
        raise ValueError(f"activations must be [n, k], got shape {activations.shape}")
    n, k = activations.shape
    m = min(int(m), n)
    if m < 1:
        return np.full((k, k), np.nan)
    member = np.zeros((n, k), dtype=bool)
    top = np.argpartition(-activations, m - 1, axis=0)[:m]  # [m, k], ties broken arbitrarily but per feature
    member[top, np.arange(k)[None, :]] = True
    shared = member.T.astype(np.int64) @ member.astype(np.int64)
    return shared / float(m)
