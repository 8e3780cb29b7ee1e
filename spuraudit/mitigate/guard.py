"""Did a new model help? Its held-out figures against the original model's.

Every method that writes a new model checks it on the validation split first: a method may not return a
model whose worst group fell, whose classes lost more than the allowed accuracy, or that predicts one
class for (almost) every image. The head methods apply the check to each epoch's head; MaskTune to its
tuned model. Figures are in points.
"""

from __future__ import annotations

import numpy as np

from ..analysis.metrics import accuracy, group_accuracies


def held_out_figures(preds: np.ndarray, labels: np.ndarray, group_ids: np.ndarray | None = None) -> dict:
    """accuracy, class_accuracy {class: acc}, worst_group (over real groups; NaN without them) and
    top_prediction_share (share of images given the most predicted class) of predictions on a split.

    preds, labels: int [n]; group_ids: int [n] or None."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    correct = preds == labels
    groups = group_accuracies(correct, group_ids) if group_ids is not None else {}
    counts = np.bincount(preds, minlength=int(labels.max()) + 1) if len(preds) else np.zeros(1)
    return {"accuracy": accuracy(correct),
            "class_accuracy": {int(c): a for c, a in group_accuracies(correct, labels).items()},
            "worst_group": min(groups.values()) if groups else float("nan"),
            "top_prediction_share": 100.0 * counts.max() / max(len(preds), 1)}


def guard_failure(row: dict, start: dict, max_accuracy_drop: float, max_class_drop: float,
                  required_gain: float = 0.0, smallest_group: int = 0) -> str | None:
    """Why a new model (or head) may not be chosen (None when it may), against the original's figures.

    Average accuracy may fall at most `max_accuracy_drop` points, each class's accuracy at most
    `max_class_drop`, and the worst group may not fall at all: the point of a mitigation is that
    group. With `required_gain` > 0 (see `required_gain`) it must rise by at least that many points;
    `smallest_group`, the images of the group that margin came from, is named in the reason.
    A model predicting (almost) one class for every image is refused outright."""
    if row.get("accuracy", 0.0) < start.get("accuracy", 0.0) - max_accuracy_drop:
        return f"average accuracy fell {start['accuracy'] - row['accuracy']:.1f} points"
    for c, acc in row.get("class_accuracy", {}).items():
        before = start.get("class_accuracy", {}).get(c, acc)
        if acc < before - max_class_drop:
            return f"class {c} accuracy fell {before - acc:.1f} points"
    if np.isfinite(start.get("worst_group", np.nan)) and row.get("worst_group", 0.0) < start["worst_group"] - 1e-9:
        return f"worst group fell {start['worst_group'] - row['worst_group']:.1f} points"
    classes = len(row.get("class_accuracy", {}))
    if classes >= 2 and row.get("top_prediction_share", 0.0) >= 99.0 and start.get("top_prediction_share", 0) < 99.0:
        return "collapsed: one class predicted for every image"
    if required_gain > 0 and np.isfinite(start.get("worst_group", np.nan)):
        gain = row.get("worst_group", 0.0) - start["worst_group"]
        if gain < required_gain:
            where = f"a group of {smallest_group} images" if smallest_group else "the smallest group"
            return (f"worst group rose {gain:.1f} points, less than the {required_gain:.1f} that sampling noise "
                    f"alone gives on {where}")
    return None


def noise_margin(accuracy_pct: float, images: int, z: float) -> float:
    """Points a group accuracy of `accuracy_pct` measured on `images` images moves by sampling noise alone:
    `z` standard errors of a binomial proportion (p held within 5-95 %, so a group at 0 or 100 % still has
    a margin). A new model whose val worst group rose by less than this has not been shown to help."""
    if images <= 0 or z <= 0:
        return 0.0
    p = min(max(accuracy_pct / 100.0, 0.05), 0.95)
    return float(100.0 * z * np.sqrt(p * (1.0 - p) / images))


def required_gain(worst_group_pct: float, group_ids: np.ndarray | None, z: float) -> tuple[float, int]:
    """(points, images): the rise a worst group of `worst_group_pct` must show to beat sampling noise on the
    smallest of the groups in `group_ids` (`noise_margin` at `z`), and that group's size. (0, 0) without
    groups or without a finite worst group."""
    if group_ids is None or not np.isfinite(worst_group_pct) or len(group_ids) == 0:
        return 0.0, 0
    sizes = np.bincount(np.asarray(group_ids))
    smallest = int(sizes[sizes > 0].min())
    return noise_margin(worst_group_pct, smallest, z), smallest
