"""The audit's numbers, as pure NumPy functions over whole arrays.

Arrays in, arrays out (memory maps accepted); no model, no torch. Accuracies and gaps are in
percentage points, AUROC is a fraction. See docs/methods.md §2, §5 and §6.
"""

from __future__ import annotations

from .bootstrap import bootstrap_gap_ci, bootstrap_gap_cis, bootstrap_mean_ci, bootstrap_pooled_gap_ci
from .gaps import (
    GapResult,
    HighLowSets,
    clamped_k,
    feature_gap,
    feature_gaps,
    high_low_indices,
    spurious_gap,
    triage_gaps,
)
from .importance import (
    IMAGE_SET_MODES,
    ImageSetMode,
    class_feature_importance,
    empty_image_sets,
    image_set_mask,
    image_set_sizes,
    importance_from_means,
    top_features,
    top_k,
    top_images,
)
from .metrics import (
    accuracy,
    accuracy_along_ranking,
    auroc,
    average_ranks,
    group_accuracies,
    high_low_gap,
    per_class_accuracy,
    ranking_bins,
    weighted_group_accuracy,
    worst_group,
    worst_group_accuracy,
)
from .spuriosity import (
    SpuriosityStats,
    ascending_order,
    fit_spuriosity_stats,
    mean_zscore,
    spuriosity,
    spuriosity_ranking,
)

__all__ = [
    "IMAGE_SET_MODES",
    "GapResult",
    "HighLowSets",
    "ImageSetMode",
    "SpuriosityStats",
    "accuracy",
    "accuracy_along_ranking",
    "ascending_order",
    "auroc",
    "average_ranks",
    "bootstrap_gap_ci",
    "bootstrap_gap_cis",
    "bootstrap_mean_ci",
    "bootstrap_pooled_gap_ci",
    "clamped_k",
    "class_feature_importance",
    "empty_image_sets",
    "feature_gap",
    "feature_gaps",
    "fit_spuriosity_stats",
    "group_accuracies",
    "high_low_gap",
    "high_low_indices",
    "image_set_mask",
    "image_set_sizes",
    "importance_from_means",
    "mean_zscore",
    "per_class_accuracy",
    "ranking_bins",
    "spuriosity",
    "spuriosity_ranking",
    "spurious_gap",
    "triage_gaps",
    "top_features",
    "top_k",
    "top_images",
    "weighted_group_accuracy",
    "worst_group",
    "worst_group_accuracy",
]
