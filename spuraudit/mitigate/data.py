"""What the methods read from a project: the parent's feature store, its spuriosity scores, images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..analysis.gaps import high_low_indices
from ..features import FeatureStore
from ..project import Project
from ..training import load_tensors
from .base import MitigationError, Progress


def parent_store(project: Project, parent_folder: str | Path, progress: Progress | None = None) -> FeatureStore:
    """The parent model's feature store on the project, extracted now if it is missing."""
    store = project.feature_store(parent_folder)
    if store is None:
        store = project.extract(parent_folder, progress=progress)
    return store


def require_split(project: Project, split: str, why: str) -> np.ndarray:
    """Boolean mask [N] of `split`, or MitigationError explaining what the split is needed for."""
    if split not in project.table.splits:
        raise MitigationError(
            f"project '{project.name}' has no '{split}' split, which {why}. Its splits: "
            f"{project.table.splits}. Give the dataset a split column (CSV) or train/val/test folders."
        )
    return project.table.split_mask(split)


def spurious_labels(project: Project) -> dict[int, list[int]]:
    """class -> features labelled spurious in the project's label store (may be empty)."""
    return {int(c): [int(d) for d in ds] for c, ds in project.spurious_features().items() if ds}


def parent_spuriosity(project: Project, store: FeatureStore, spurious: dict[int, list[int]]) -> np.ndarray:
    """s(x) [N] of every image from the parent's features (NaN in unranked classes).

    Each split is scored as the audit scores it: with the project's 'stats' setting, i.e. mean and
    std fitted on the training split by default (docs/methods.md §5).
    """
    from ..audit import Audit

    audit = Audit(project, store, spurious=spurious)
    scores = np.full(len(project.table), np.nan)
    for split in project.table.splits:
        s = audit.spuriosity(split)
        scores = np.where(np.isnan(scores), s, scores)
    return scores


def ranked_classes(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> list[int]:
    """Classes with at least two scored images inside `mask` (a ranking needs both ends)."""
    classes = labels[mask & ~np.isnan(scores)]
    values, counts = np.unique(classes, return_counts=True)
    return [int(c) for c, n in zip(values, counts) if n >= 2]


def gap_sets(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Dataset indices of the pooled High and Low sets inside `mask` (docs/methods.md §6).

    Per ranked class: High = its k highest-spuriosity images, Low = its k lowest, with
    k clamped to ⌊n_c / 2⌋ so the two never overlap. Returns (high [nH], low [nL]).
    """
    sets = high_low_indices(np.where(mask, scores, np.nan), labels, k=k)
    high = [np.asarray(sets.high[c], dtype=np.int64) for c in sorted(sets.high)]
    low = [np.asarray(sets.low[c], dtype=np.int64) for c in sorted(sets.low)]
    if not high:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(high), np.concatenate(low)


def load_images(project: Project, indices: np.ndarray, size) -> torch.Tensor:
    """Images of the given dataset rows as one tensor [n, 3, H, W] in [0, 1] at the model's input size."""
    paths = project.table.paths
    return load_tensors([paths[i] for i in np.asarray(indices)], tuple(size))


def feature_rows(store: FeatureStore, indices: np.ndarray) -> torch.Tensor:
    """Pooled features of the given rows as float32 [n, D] (a copy out of the memory map)."""
    indices = np.asarray(indices, dtype=np.int64)
    return torch.from_numpy(np.array(store.features[indices], dtype=np.float32))
