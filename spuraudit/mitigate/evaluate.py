"""Accuracy of a model's predictions per split, class and group: the numbers a model card records.

All accuracies are in percentage points (0-100). Groups are the dataset's (class, attribute) cells
(`ImageTable.group_ids`); datasets without group columns get per-class figures only.
"""

from __future__ import annotations

import numpy as np

from ..analysis.metrics import accuracy, group_accuracies, weighted_group_accuracy, worst_group
from ..data.table import ImageTable


def named_group_accuracies(correct: np.ndarray, group_ids: np.ndarray, mask: np.ndarray,
                           group_names: list[str]) -> dict[str, float]:
    """group name -> accuracy (points) over the images of `mask`; groups absent from `mask` are left out.

    correct: bool [N]; group_ids: int [N] indexing `group_names`; mask: bool [N].
    """
    per_group = group_accuracies(correct[mask], group_ids[mask])
    return {group_names[g]: acc for g, acc in per_group.items()}


def training_group_shares(table: ImageTable, groups: tuple[np.ndarray, list[str]] | None = None) -> dict[str, float]:
    """group name -> its share (fraction, sums to 1) of the training split (all images if none).

    groups: `table.group_ids()` when the caller has it already (seconds on a million-row table).
    """
    ids, names = groups if groups is not None else table.group_ids()
    fit = table.fit_split()
    mask = table.split_mask(fit)
    counts = np.bincount(ids[mask], minlength=len(names))
    total = counts.sum()
    return {name: float(counts[g] / total) for g, name in enumerate(names) if total}


def split_metrics(table: ImageTable, preds: np.ndarray, split: str,
                  groups: tuple[np.ndarray, list[str]] | None = None) -> dict:
    """Accuracy figures of predictions `preds` (int [N], one per table row) on one split.

    Keys (points): n, accuracy, per_class_accuracy {class: acc}; with group columns also
    group_accuracy {group: acc}, worst_group_accuracy, worst_group, and weighted_accuracy (group
    accuracies averaged with the training split's group shares, as DFR-style papers report;
    `accuracy` is the plain average over the split's images, as the MaskTune paper reports).
    groups: `table.group_ids()` when the caller has it already.
    """
    labels = table.labels
    correct = np.asarray(preds) == labels
    mask = table.split_mask(split)
    out: dict = {"n": int(mask.sum()), "accuracy": accuracy(correct[mask])}
    per_class = group_accuracies(correct[mask], labels[mask])
    out["per_class_accuracy"] = {table.class_names[c]: acc for c, acc in per_class.items()}
    if table.group_columns:
        ids, names = groups if groups is not None else table.group_ids()
        out["group_accuracy"] = named_group_accuracies(correct, ids, mask, names)
        worst, worst_acc = worst_group(correct[mask], ids[mask])
        out["worst_group"] = names[worst] if worst is not None else None
        out["worst_group_accuracy"] = worst_acc
        out["weighted_accuracy"] = weighted_group_accuracy(out["group_accuracy"],
                                                           training_group_shares(table, (ids, names)))
    return out


def card_metrics(table: ImageTable, preds: np.ndarray, splits=("val", "test")) -> dict:
    """Flat card metrics `<split>_<figure>` for each present split of `splits` (points), e.g.
    `test_accuracy`, `test_worst_group_accuracy`, `val_per_class_accuracy` — the demo card's naming."""
    out = {}
    groups = table.group_ids() if table.group_columns else None
    for split in splits:
        if split not in table.splits:
            continue
        for key, value in split_metrics(table, preds, split, groups).items():
            out[f"{split}_{key}"] = _rounded(value)
    return out


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 2)
    return value
