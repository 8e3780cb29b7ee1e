"""Spuriosity scores and rankings (docs/methods.md §5).

For an image `x` labelled `c`, with `F_c` the features marked spurious for `c`,

    s(x) = (1 / |F_c|) · Σ_{d ∈ F_c} (r_d(x) − μ_{d,c}) / σ_{d,c},

where μ_{d,c}, σ_{d,c} are the mean and standard deviation of `r_d` over the images labelled `c`.
`s` is unitless (an average z-score). Images of classes without spurious features are not ranked and
get NaN.

Where μ and σ come from matters: the original code refits them on every split, so a split's scores
are always centred on that split. Fitting them once on the training split (`fit_spuriosity_stats`)
and passing them to `spuriosity` for every split measures all splits on the same scale; that is the
recommended mode, the per-split one stays available (``stats=None``) for faithful comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SpuriosityStats:
    """μ_{d,c} and σ_{d,c} for every (class, spurious feature) pair, in units of r_d.

    `feature_ids[c]`, `mean[c]` and `std[c]` are aligned arrays [|F_c|]; `n_images[c]` is the number
    of images labelled `c` they were fitted on (0 leaves mean and std NaN). σ is the population
    standard deviation (ddof = 0): within a class all features share the same n, so the choice
    of ddof rescales every z-score of the class by the same factor and changes no ranking.
    """

    feature_ids: dict[int, np.ndarray] = field(default_factory=dict)
    mean: dict[int, np.ndarray] = field(default_factory=dict)
    std: dict[int, np.ndarray] = field(default_factory=dict)
    n_images: dict[int, int] = field(default_factory=dict)

    def lookup(self, class_index: int, feature_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(μ [F], σ [F], n_images) for the given features of a class, in the order asked.

        Raises KeyError when a (class, feature) pair was not fitted, e.g. when the spurious
        features were relabelled after the statistics were computed.
        """
        if class_index not in self.feature_ids:
            raise KeyError(f"no spuriosity statistics for class {class_index}; refit them")
        position = {int(d): i for i, d in enumerate(self.feature_ids[class_index])}
        missing = [int(d) for d in feature_ids if int(d) not in position]
        if missing:
            raise KeyError(f"no spuriosity statistics for class {class_index}, features {missing}; refit them")
        index = np.array([position[int(d)] for d in feature_ids], dtype=np.int64)
        return self.mean[class_index][index], self.std[class_index][index], self.n_images[class_index]


def _spurious_lists(spurious: dict[int, list[int]]) -> dict[int, np.ndarray]:
    """Classes with at least one spurious feature -> their feature ids (duplicates dropped, order kept)."""
    lists = {}
    for class_index, feature_ids in spurious.items():
        ids = np.asarray(list(dict.fromkeys(int(d) for d in feature_ids)), dtype=np.int64)
        if ids.size:
            lists[int(class_index)] = ids
    return lists


def fit_spuriosity_stats(
    features: np.ndarray, labels: np.ndarray, spurious: dict[int, list[int]]
) -> SpuriosityStats:
    """Mean and std of each spurious feature over the images labelled with its class.

    Args:
        features: float [N, D], pooled features r_d(x) (a memory map is fine: only the rows of
            ranked classes and the spurious columns are read).
        labels: int [N], true classes.
        spurious: class -> list of its spurious feature indices. Classes with an empty list are
            skipped.

    Returns:
        `SpuriosityStats` (see its docstring for units and ddof).
    """
    features = np.asanyarray(features)  # keeps a memory map mapped (no copy)
    labels = np.asarray(labels)
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"features have {features.shape[0]} rows but there are {labels.shape[0]} labels")
    lists = _spurious_lists(spurious)
    means: dict[int, np.ndarray] = {}
    stds: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for class_index, feature_ids in lists.items():
        rows = np.flatnonzero(labels == class_index)
        counts[class_index] = int(rows.size)
        if rows.size == 0:
            means[class_index] = np.full(feature_ids.size, np.nan)
            stds[class_index] = np.full(feature_ids.size, np.nan)
            continue
        activations = np.asarray(features[np.ix_(rows, feature_ids)], dtype=np.float64)  # [n_c, |F_c|]
        means[class_index] = activations.mean(axis=0)
        stds[class_index] = activations.std(axis=0)
    return SpuriosityStats(feature_ids=lists, mean=means, std=stds, n_images=counts)


def spuriosity(
    features: np.ndarray,
    labels: np.ndarray,
    spurious: dict[int, list[int]],
    stats: SpuriosityStats | None = None,
) -> np.ndarray:
    """Spuriosity s(x) of every image (see the module docstring for the formula).

    Args:
        features: float [N, D], pooled features r_d(x).
        labels: int [N], true classes: an image is scored with its own class's spurious features.
        spurious: class -> list of its spurious feature indices.
        stats: μ, σ to standardise with; None fits them on `features` themselves (the original,
            per-split behaviour). Pass training-split statistics to score other splits on the
            training scale.

    Returns:
        float64 [N], unitless. NaN for images of classes without spurious features, and for
        classes whose statistics were fitted on zero images. A feature with σ = 0 (constant over
        the fitting images) contributes 0 instead of ±inf or NaN: it carries no information about
        how far an image sits from its class.
    """
    features = np.asanyarray(features)  # keeps a memory map mapped (no copy)
    labels = np.asarray(labels)
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"features have {features.shape[0]} rows but there are {labels.shape[0]} labels")
    if stats is None:
        stats = fit_spuriosity_stats(features, labels, spurious)
    scores = np.full(labels.shape[0], np.nan)
    # One vectorised step per ranked class; the images of a class are handled together.
    for class_index, feature_ids in _spurious_lists(spurious).items():
        rows = np.flatnonzero(labels == class_index)
        if rows.size == 0:
            continue
        mean, std, n_fitted = stats.lookup(class_index, feature_ids)
        if n_fitted == 0:
            continue
        scores[rows] = mean_zscore(features[np.ix_(rows, feature_ids)], mean, std)
    return scores


def mean_zscore(activations: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """s(x) of one class's images: the mean over its spurious features of (r_d(x) − μ_d) / σ_d.

    Args:
        activations: float [n, F], the images' spurious-feature activations.
        mean, std: float [F], μ and σ of those features for the class.

    Returns:
        float64 [n]. A feature with σ = 0 contributes 0 (see `spuriosity`).
    """
    activations = np.asarray(activations, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    spread = std > 0
    z = np.where(spread, (activations - mean) / np.where(spread, std, 1.0), 0.0)
    return z.mean(axis=1)


def ascending_order(scores: np.ndarray) -> np.ndarray:
    """Positions of `scores` by increasing value, ties by position (a ranking's order); NaN left out."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(scores))
    return valid[np.argsort(scores[valid], kind="stable")].astype(np.int64)


def spuriosity_ranking(scores: np.ndarray, labels: np.ndarray, class_index: int) -> np.ndarray:
    """The spuriosity ranking of one class: "cue absent" first, "cue everywhere" last.

    Args:
        scores: float [N], s(x) from `spuriosity` (NaN = not ranked).
        labels: int [N], true classes.
        class_index: the class to rank.

    Returns:
        int64 [n_c] indices of the images labelled `class_index` with a score, by increasing
        score (ties: lower index first). Empty for an unranked class.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    members = np.flatnonzero(labels == class_index)
    return members[ascending_order(scores[members])].astype(np.int64)
