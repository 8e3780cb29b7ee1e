"""Which neural features matter for which class (docs/methods.md §2).

`I[c, d] = mean over x in S_c of r_d(x) · W[c, d]`, where `r_d(x)` is the pooled feature `d` of image
`x`, `W` the head's weight matrix and `S_c` the set of images the mean runs over. `S_c` is a choice
with visible consequences, so every function here takes it as `mode`:

- ``"predicted"``: images the model predicts as `c` (Salient ImageNet's default);
- ``"correct"``:   images labelled `c` and predicted as `c` (Spuriosity Rankings' default);
- ``"labelled"``:  all images labelled `c`.

Everything is NumPy in, NumPy out, and accepts memory-mapped feature arrays (they are read in row
chunks, never copied whole).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

ImageSetMode = Literal["predicted", "correct", "labelled"]
IMAGE_SET_MODES: tuple[str, ...] = ("predicted", "correct", "labelled")

# Rows of the feature matrix read at once: bounds memory for memory-mapped stores of any size
# (8192 rows x 2048 float64 features = 128 MiB).
_ROW_CHUNK = 8192


def _check_mode(mode: str) -> None:
    if mode not in IMAGE_SET_MODES:
        raise ValueError(f"mode must be one of {IMAGE_SET_MODES}, got {mode!r}")


def image_set_mask(labels: np.ndarray, preds: np.ndarray, class_index: int, mode: ImageSetMode) -> np.ndarray:
    """Membership of S_c for one class.

    Args:
        labels: int [N], true class of each image.
        preds: int [N], predicted class of each image.
        class_index: the class `c`.
        mode: ``"predicted"`` (preds == c), ``"correct"`` (labels == c and preds == c) or
            ``"labelled"`` (labels == c).

    Returns:
        bool [N], True for the images in S_c.
    """
    _check_mode(mode)
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} must have the same shape")
    if mode == "predicted":
        return preds == class_index
    if mode == "labelled":
        return labels == class_index
    return (labels == class_index) & (preds == class_index)


def _image_set_class(labels: np.ndarray, preds: np.ndarray, num_classes: int, mode: ImageSetMode) -> np.ndarray:
    """int [N]: the class whose S_c holds each image, or -1 for an image in no S_c.

    Every mode puts an image in at most one S_c, which is what lets the per-class means below be
    computed in one pass over the rows instead of one pass per class.
    """
    _check_mode(mode)
    labels = np.asarray(labels).astype(np.int64, copy=False)
    preds = np.asarray(preds).astype(np.int64, copy=False)
    if labels.shape != preds.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} must be 1-D and of the same length")
    for name, values in (("labels", labels), ("preds", preds)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), found [{values.min()}, {values.max()}]")
    if mode == "predicted":
        return preds
    if mode == "labelled":
        return labels
    return np.where(labels == preds, labels, -1)


def image_set_sizes(labels: np.ndarray, preds: np.ndarray, num_classes: int, mode: ImageSetMode) -> np.ndarray:
    """|S_c| for every class: int [C]."""
    owner = _image_set_class(labels, preds, num_classes, mode)
    return np.bincount(owner[owner >= 0], minlength=num_classes)


def empty_image_sets(labels: np.ndarray, preds: np.ndarray, num_classes: int, mode: ImageSetMode) -> np.ndarray:
    """Classes whose S_c is empty (their importance row is NaN): int [n_empty], ascending.

    Report these to the user: with ``mode="correct"`` a class the model never gets right has no
    importance at all, which is itself a finding.
    """
    return np.flatnonzero(image_set_sizes(labels, preds, num_classes, mode) == 0)


def _class_sums(features: np.ndarray, owner: np.ndarray, num_classes: int) -> np.ndarray:
    """Sum of the feature rows of each class: float64 [C, D] (rows with owner -1 are skipped).

    Rows are read in chunks so a memory-mapped [N, D] store is never loaded whole; inside a chunk
    the rows are sorted by class and summed segment by segment with `np.add.reduceat`, which costs
    O(rows · D) instead of the O(rows · C · D) of a dense one-hot product.
    """
    num_rows, num_features = features.shape
    sums = np.zeros((num_classes, num_features), dtype=np.float64)
    for start in range(0, num_rows, _ROW_CHUNK):
        stop = min(start + _ROW_CHUNK, num_rows)
        chunk_owner = owner[start:stop]
        keep = np.flatnonzero(chunk_owner >= 0)
        if keep.size == 0:
            continue
        order = keep[np.argsort(chunk_owner[keep], kind="stable")]
        sorted_owner = chunk_owner[order]
        rows = np.asarray(features[start:stop], dtype=np.float64)[order]
        segment_starts = np.flatnonzero(np.r_[True, sorted_owner[1:] != sorted_owner[:-1]])
        sums[sorted_owner[segment_starts]] += np.add.reduceat(rows, segment_starts, axis=0)
    return sums


def class_feature_importance(
    features: np.ndarray,
    head_weight: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    mode: ImageSetMode = "correct",
) -> np.ndarray:
    """Importance of every feature for every class: `I[c, d] = mean_{x in S_c} r_d(x) · W[c, d]`.

    Args:
        features: float [N, D], pooled features r_d(x) (a memory map is fine).
        head_weight: float [C, D], the head's weight matrix W.
        labels: int [N], true classes in [0, C).
        preds: int [N], predicted classes in [0, C).
        mode: which images form S_c (see the module docstring). Default ``"correct"``.

    Returns:
        float64 [C, D], in the units of r_d times W (logit units). A class whose S_c is empty gets a
        row of NaN; `empty_image_sets` lists those classes.
    """
    features = np.asanyarray(features)  # keeps a memory map mapped (no copy)
    head_weight = np.asarray(head_weight, dtype=np.float64)
    if features.ndim != 2 or head_weight.ndim != 2 or features.shape[1] != head_weight.shape[1]:
        raise ValueError(f"features [N, D] {features.shape} and head weight [C, D] {head_weight.shape} disagree")
    if features.shape[0] != len(labels):
        raise ValueError(f"features have {features.shape[0]} rows but there are {len(labels)} labels")
    num_classes = head_weight.shape[0]
    owner = _image_set_class(labels, preds, num_classes, mode)
    counts = np.bincount(owner[owner >= 0], minlength=num_classes).astype(np.float64)
    sums = _class_sums(features, owner, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_activation = sums / counts[:, None]  # 0/0 -> NaN for empty S_c, on purpose
    return importance_from_means(mean_activation, head_weight)


def importance_from_means(mean_activation: np.ndarray, head_weight: np.ndarray) -> np.ndarray:
    """`I = (mean over S_c of r) ⊙ W`: float64, [C, D] from [C, D] means, or [D] for one class's row.

    The means may come from a stored pass over the features (the feature store keeps them per
    class, split and mode), so one class's importance costs O(D).
    """
    return np.asarray(mean_activation, dtype=np.float64) * np.asarray(head_weight, dtype=np.float64)


def top_k(values: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """Positions of the k largest (or smallest) values of a 1-D array, best first.

    NaN values are never picked; ties go to the lower position first (the order a stable sort
    gives). `np.argpartition` finds the candidates in O(n), so only about k values are sorted.

    Returns:
        int64 [min(k, number of non-NaN values)].
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    valid = np.flatnonzero(~np.isnan(values))
    key = -values[valid] if largest else values[valid]
    k = min(int(k), valid.size)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k < valid.size:
        kth = np.partition(key, k - 1)[k - 1]
        candidates = np.flatnonzero(key <= kth)  # includes every value tied with the k-th
    else:
        candidates = np.arange(valid.size)
    order = candidates[np.argsort(key[candidates], kind="stable")][:k]
    return valid[order].astype(np.int64)


def top_features(importance: np.ndarray, k: int) -> np.ndarray:
    """Each class's k most important features.

    Args:
        importance: float [C, D], e.g. from `class_feature_importance`.
        k: features per class; clamped to D.

    Returns:
        int64 [C, min(k, D)] feature indices by decreasing importance; equal importances keep the
        lower feature index first. Entries whose importance is NaN (every entry of a class with an
        empty S_c) are -1, and come after all real features of that row.
    """
    importance = np.asarray(importance, dtype=np.float64)
    if importance.ndim != 2:
        raise ValueError(f"importance must be [C, D], got shape {importance.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    k = min(int(k), importance.shape[1])
    is_nan = np.isnan(importance)
    # Negate so a stable ascending sort gives decreasing importance with ties by feature index;
    # NaN becomes +inf to sink to the end of its row.
    sort_key = np.where(is_nan, np.inf, -importance)
    order = np.argsort(sort_key, axis=1, kind="stable")[:, :k]
    return np.where(np.take_along_axis(is_nan, order, axis=1), -1, order).astype(np.int64)


def top_images(values: np.ndarray, mask: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """The k images of `mask` with the largest (or smallest) value.

    Args:
        values: float [N], e.g. one feature's activations r_d over the dataset.
        mask: bool [N], the candidate images (e.g. S_c); NaN values are never picked.
        k: how many to return (fewer when fewer candidates exist).
        largest: True for the top images, False for the bottom ones.

    Returns:
        int64 [min(k, n_candidates)] indices into `values`, best first (decreasing value when
        `largest`, increasing otherwise). Ties go to the lower index first, so results are
        reproducible.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if values.shape != mask.shape or values.ndim != 1:
        raise ValueError(f"values {values.shape} and mask {mask.shape} must be 1-D and of the same length")
    candidates = np.flatnonzero(mask)
    return candidates[top_k(values[candidates], max(int(k), 0), largest=largest)].astype(np.int64)
