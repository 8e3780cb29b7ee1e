"""The audit's numbers, as pure NumPy functions over whole arrays.

Arrays in, arrays out (memory maps accepted); no model, no torch. Accuracies and gaps are in
percentage points, AUROC is a fraction. See the methods reference, sections 2, 5 and 6.
"""

from __future__ import annotations

from .bootstrap import bootstrap_gap_ci, bootstrap_gap_cis, bootstrap_mean_ci, bootstrap_pooled_gap_ci
from .gaps import GapResult, clamped_k, feature_gap, feature_gaps, spurious_gap, triage_gaps
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
    auroc,
    average_ranks,
    group_accuracies,
    per_class_accuracy,
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
    "ImageSetMode",
    "SpuriosityStats",
    "accuracy",
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
    "image_set_mask",
    "image_set_sizes",
    "importance_from_means",
    "mean_zscore",
    "per_class_accuracy",
    "spuriosity",
    "spuriosity_ranking",
    "spurious_gap",
    "triage_gaps",
    "top_features",
    "top_k",
    "top_images",
    "worst_group_accuracy",
]
