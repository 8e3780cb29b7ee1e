"""Spurious feature collisions, collision flags and the core-cropping box (docs/methods.md §8).

A *collision* is a feature labelled spurious for one class (c1) that is among the top features of
another class (c2). An image of c1 in which that feature fires strongly is pulled towards c2; where
this happens the gap of c1 turns negative. Pure array functions: the audit feeds them one class's
rows at a time.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# A second object shares the frame with the labelled one (smaller, shifted, partly covered): c2's core
# features reach only a third to a half of their level on c2's own images there, and stay far lower on
# images of one object; a cut at half their level misses most images of several objects.
DEFAULT_FLAG_CUT = 0.3
DEFAULT_BOX_THRESHOLD = 0.5  # the soft core mask, relative to its maximum, that the crop box must hold


def collisions(
    spurious: Mapping[int, Sequence[int]],
    top: Mapping[int, Sequence[int]],
    importance: Mapping[int, Mapping[int, float]],
    pair_labels: Mapping[tuple[int, int], str],
) -> list[dict]:
    """Every (c1, d, c2) where d is labelled spurious for c1 and is one of c2's top features.

    top: class -> its top feature ids, best first; importance: class -> {feature: I[c, d]} for those;
    pair_labels: (class, feature) -> "spurious" / "core" / ... (absent = unlabelled).
    `core_there` says whether d counts as core for c2 (any label but spurious): only those explain
    a pull towards c2.
    """
    rows = []
    for c1 in sorted(spurious):
        for d in dict.fromkeys(int(f) for f in spurious[c1]):
            for c2 in sorted(top):
                ids = [int(f) for f in top[c2]]
                if c2 == c1 or d not in ids:
                    continue
                label = pair_labels.get((c2, d), "unlabelled")
                rows.append({"class": c1, "feature": d, "other_class": c2, "rank_there": ids.index(d) + 1,
                             "importance_there": float(importance[c2][d]), "label_there": label,
                             "core_there": label != "spurious"})
    return rows


def confusion_flow(preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [C] of the predicted classes of a set of images (e.g. one class's high-spuriosity set)."""
    return np.bincount(np.asarray(preds, dtype=np.int64), minlength=num_classes)


def collision_strength(activations: np.ndarray, reference_mean: np.ndarray) -> np.ndarray:
    """How strongly another class's core features fire on each image, in units of their usual level.

    activations: [n, F] the images' values of c2's core features; reference_mean: [F] their mean over
    c2's own images. Returns [n]: the mean over features of r_f(x) / μ_f (1 = as on a typical c2
    image). Features whose reference mean is not positive say nothing and are left out.
    """
    activations = np.asarray(activations, dtype=np.float64)
    reference_mean = np.asarray(reference_mean, dtype=np.float64)
    usable = reference_mean > 0
    if activations.ndim != 2 or activations.shape[1] != reference_mean.shape[0]:
        raise ValueError(f"activations {activations.shape} do not match {reference_mean.shape[0]} features")
    if not usable.any() or activations.shape[0] == 0:
        return np.zeros(activations.shape[0])
    return (activations[:, usable] / reference_mean[usable]).mean(axis=1)


def flag_order(strength: np.ndarray, cut: float = DEFAULT_FLAG_CUT) -> tuple[np.ndarray, np.ndarray]:
    """(positions sorted by strength, strongest first; which of them reach the cut)."""
    strength = np.asarray(strength, dtype=np.float64)
    order = np.argsort(-strength, kind="stable")
    return order, strength[order] >= cut


def soft_core_mask(maps: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """One image's soft mask of its class's core features: the weighted mean of their NAMs [F, H, W].

    Each NAM is already scaled to a peak of 1; negative weights count as zero. Returns [H, W] in [0, 1].
    """
    maps = np.asarray(maps, dtype=np.float64)
    w = np.ones(len(maps)) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    if maps.ndim != 3 or len(w) != len(maps):
        raise ValueError(f"maps must be [F, H, W] with one weight each, got {maps.shape} and {len(w)} weights")
    if w.sum() <= 0:
        return np.zeros(maps.shape[1:])
    mask = np.tensordot(w / w.sum(), maps, axes=1)
    peak = mask.max()
    return mask / peak if peak > 0 else mask


def square_box(mask: np.ndarray, threshold: float = DEFAULT_BOX_THRESHOLD) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the square crop around a soft mask.

    The box bounds the pixels at or above `threshold` × the mask's maximum; its shorter side is
    extended to the longer one around the same centre, then shifted (not shrunk) to lie inside the
    image, and cut only when the image itself is narrower. An empty mask gives the whole image.
    """
    mask = np.asarray(mask, dtype=np.float64)
    height, width = mask.shape
    peak = mask.max() if mask.size else 0.0
    if peak <= 0:
        return 0, 0, height, width
    ys, xs = np.nonzero(mask >= threshold * peak)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(bottom - top, right - left)

    def place(start: int, end: int, limit: int) -> tuple[int, int]:
        size = min(side, limit)
        begin = (start + end - size) // 2
        begin = min(max(begin, 0), limit - size)
        return int(begin), int(size)

    top, box_h = place(top, bottom, height)
    left, box_w = place(left, right, width)
    return top, left, box_h, box_w
