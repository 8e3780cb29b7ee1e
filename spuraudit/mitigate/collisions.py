"""Collisions: images of other classes on which a class's spurious cue fires (docs/methods.md §7.1).

Low-spuriosity images of class c teach the head that c does not need its cue; they say nothing about
the images that suffer most from the cue, those of another class o that carry it and get called c.
This module finds them (scored with class c's own μ, σ), for the tuning set (training split) and for
the stopping split (another class's High/Low sets by c's cue).

Features are read a chunk of rows at a time, and only the spurious columns: never an [N, D] matrix.
"""

from __future__ import annotations

import numpy as np

from ..analysis.metrics import high_low_gap
from ..analysis.gaps import high_low_indices
from ..analysis.spuriosity import fit_spuriosity_stats, mean_zscore

CHUNK = 16384


def cross_class_scores(features, rows: np.ndarray, labels: np.ndarray, spurious: dict[int, list[int]],
                       fit_mask: np.ndarray) -> dict[int, np.ndarray]:
    """class c -> float [len(rows)]: c's spuriosity of every image in `rows`, whatever its label.

    μ, σ are fitted on class c's images inside `fit_mask` (the training split). Images of class c itself
    get NaN here: their own score is the ordinary spuriosity."""
    rows = np.asarray(rows, dtype=np.int64)
    stats = fit_spuriosity_stats(features, np.where(fit_mask, labels, -1), spurious)
    classes = [c for c in stats.feature_ids if stats.n_images.get(c, 0) > 0]
    union = np.unique(np.concatenate([stats.feature_ids[c] for c in classes])) if classes else np.empty(0, np.int64)
    column = {int(d): i for i, d in enumerate(union)}
    out = {c: np.full(len(rows), np.nan) for c in classes}
    for start in range(0, len(rows), CHUNK):
        part = rows[start:start + CHUNK]
        block = np.asarray(features[np.ix_(part, union)], dtype=np.float64)  # [chunk, |union|]
        for c in classes:
            ids = stats.feature_ids[c]
            z = mean_zscore(block[:, [column[int(d)] for d in ids]], stats.mean[c], stats.std[c])
            out[c][start:start + len(part)] = np.where(labels[part] == c, np.nan, z)
    return out


def training_collisions(features, labels: np.ndarray, preds: np.ndarray, train: np.ndarray,
                        spurious: dict[int, list[int]], k: int, min_gap: float
                        ) -> dict[int, dict[int, np.ndarray]]:
    """c -> {o: dataset indices}: the training images of another class o that carry class c's cue most.

    A pair (c, o) collides when the parent model calls some of o's training images c AND, ranking o's
    training images by c's cue, the parent's accuracy on the High end is at least `min_gap` points below
    its accuracy on the Low end (a confusing cue, docs/methods.md §6). The High end (k clamped to half
    of o's images) joins the tuning set."""
    rows = np.flatnonzero(train)
    cross = cross_class_scores(features, rows, labels, spurious, train)
    correct = np.asarray(preds) == labels
    found: dict[int, dict[int, np.ndarray]] = {}
    for c, s in cross.items():
        scores = np.full(len(labels), np.nan)
        scores[rows] = s
        confused = np.unique(labels[train & (np.asarray(preds) == c) & (labels != c)])
        if not len(confused):
            continue
        ranked = high_low_indices(scores, labels, k=k, classes=confused)
        for o in ranked.high:
            high, low = ranked.high[o], ranked.low[o]
            _, _, gap = high_low_gap(correct, high, low)
            if np.isfinite(gap) and gap <= -min_gap:
                found.setdefault(c, {})[int(o)] = np.sort(np.asarray(high, dtype=np.int64))
    return found


def held_out_collision_sets(features, labels: np.ndarray, split: np.ndarray, train: np.ndarray,
                            spurious: dict[int, list[int]], pairs: dict[int, list[int]], k: int
                            ) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """(c, o) -> (High, Low) dataset indices: class o's images in `split` ranked by class c's cue, for the
    (c, o) pairs that collide in training; k clamped to half of o's images, as for every gap."""
    wanted = {c: os for c, os in pairs.items() if os}
    if not wanted:
        return {}
    rows = np.flatnonzero(split)
    cross = cross_class_scores(features, rows, labels, {c: spurious[c] for c in wanted}, train)
    sets = {}
    for c, others in wanted.items():
        scores = np.full(len(labels), np.nan)
        scores[rows] = cross[c]
        for o in others:
            ranked = high_low_indices(np.where(labels == o, scores, np.nan), labels, k=k)
            if o in ranked.high and len(ranked.high[o]):
                sets[(c, int(o))] = (np.asarray(ranked.high[o], np.int64), np.asarray(ranked.low[o], np.int64))
    return sets
