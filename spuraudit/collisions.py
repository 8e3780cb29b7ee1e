"""Collisions, collision flags and core cropping for one audit (docs/methods.md §8).

The formulas live in `spuraudit.analysis.collisions`; this module reads the rows they need from the
feature store, one class at a time, and runs the model only on the images being cropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import analysis
from .analysis import collisions as formulas
from .audit import Audit, GapReport

COLLISION_COLUMNS = ["class_index", "class", "feature", "other_index", "other_class", "rank_there",
                     "importance_there", "label_there", "core_there", "high_n", "flow_n", "flow_pct"]
FLAG_COLUMNS = ["row", "class_index", "class", "other_index", "other_class", "spuriosity", "strength",
                "flagged", "predicted_index", "predicted", "path"]


@dataclass
class CollisionReport:
    collisions: pd.DataFrame  # one row per (class, spurious feature, other class where it is top)
    flows: pd.DataFrame  # class -> predicted class counts on each ranked class's high-spuriosity set
    gaps: GapReport
    negative: list[int]  # ranked classes whose gap is below zero


def collision_report(audit: Audit, split: str | None = None, top_k: int = 5, mode: str = "correct",
                     gap_k: int = 100) -> CollisionReport:
    """Where each labelled spurious feature is a top feature of another class, and where images flow."""
    split = split or audit.default_split()
    names = audit.class_names
    weights = audit.importance(split, mode)  # [C, D] from the stored class means: no image rows read
    top, importance = {}, {}
    for c in range(len(names)):
        top[c] = [int(d) for d in analysis.top_k(weights[c], top_k)]
        importance[c] = {d: float(weights[c, d]) for d in top[c]}
    rows = formulas.collisions(audit.spurious, top, importance, audit._pair_labels())
    gaps = audit.gaps(split, k=gap_k, n_boot=200)
    flows = []
    for c1 in sorted(gaps.high):
        counts = formulas.confusion_flow(audit.preds[gaps.high[c1]], len(names))
        flows += [{"class_index": c1, "class": names[c1], "predicted_index": c2, "predicted": names[c2],
                   "n": int(n)} for c2, n in enumerate(counts) if n]
    flows = pd.DataFrame(flows, columns=["class_index", "class", "predicted_index", "predicted", "n"])
    table = []
    for r in rows:
        c1, c2 = r["class"], r["other_class"]
        high = gaps.high.get(c1, np.zeros(0, dtype=np.int64))
        flow = int((audit.preds[high] == c2).sum())
        table.append({"class_index": c1, "class": names[c1], "feature": r["feature"], "other_index": c2,
                      "other_class": names[c2], "rank_there": r["rank_there"],
                      "importance_there": r["importance_there"], "label_there": r["label_there"],
                      "core_there": r["core_there"], "high_n": len(high), "flow_n": flow,
                      "flow_pct": 100.0 * flow / len(high) if len(high) else float("nan")})
    negative = [int(c) for c, g in zip(gaps.per_class["class_index"], gaps.per_class["gap"]) if g < 0]
    return CollisionReport(pd.DataFrame(table, columns=COLLISION_COLUMNS), flows, gaps, negative)


def core_features(audit: Audit, class_index: int, split: str | None, top_k: int = 5, mode: str = "correct",
                  exclude: set[int] = frozenset()) -> tuple[list[int], list[float]]:
    """The class's top features that are not labelled spurious (nor in `exclude`), with their importance."""
    table = audit.top_features(class_index, k=top_k, split=split, mode=mode)
    spurious = set(audit.spurious.get(class_index, [])) | set(exclude)
    keep = [(int(d), float(i)) for d, i in zip(table["feature"], table["importance"]) if int(d) not in spurious]
    return [d for d, _ in keep], [i for _, i in keep]


def collision_flags(audit: Audit, report: CollisionReport | None = None, split: str | None = None,
                    top_k: int = 5, mode: str = "correct", cut: float = formulas.DEFAULT_FLAG_CUT,
                    gap_k: int = 100) -> pd.DataFrame:
    """The high-spuriosity images of each negative-gap class, strongest collision first.

    Strength: how strongly a colliding class's core features (its top features other than the
    spurious ones of either class) fire on the image, relative to their mean on that class's own
    images; an image is flagged (a likely label error or an image of several objects) at `cut`.
    """
    split = split or audit.default_split()
    report = report or collision_report(audit, split, top_k, mode, gap_k)
    names, out = audit.class_names, []
    fit = audit._fit_split(split)
    for c1 in report.negative:
        others = report.collisions[(report.collisions["class_index"] == c1) & report.collisions["core_there"]]
        high = np.sort(report.gaps.high[c1])
        best = np.full(len(high), -np.inf)
        best_class = np.full(len(high), -1)
        for c2 in sorted(set(int(c) for c in others["other_index"])):
            ids, _ = core_features(audit, c2, split, top_k, mode, exclude=set(audit.spurious.get(c1, [])))
            if not ids or not len(high):
                continue
            mean, _ = audit.stats.class_mean(c2, fit, "labelled")
            strength = formulas.collision_strength(audit.rows_of(high, np.asarray(ids)), np.asarray(mean)[ids])
            better = strength > best
            best[better], best_class[better] = strength[better], c2
        rows, scores = audit.spuriosity_of_class(c1, split)
        spur = dict(zip(rows.tolist(), scores.tolist()))
        known = best_class >= 0
        order, flagged = formulas.flag_order(best[known], cut)
        for pos, flag in zip(order, flagged):
            i = int(high[known][pos])
            c2 = int(best_class[known][pos])
            out.append({"row": i, "class_index": c1, "class": names[c1], "other_index": c2,
                        "other_class": names[c2], "spuriosity": spur.get(i, float("nan")),
                        "strength": float(best[known][pos]), "flagged": bool(flag),
                        "predicted_index": int(audit.preds[i]), "predicted": names[int(audit.preds[i])],
                        "path": audit.table.path(i)})
    return pd.DataFrame(out, columns=FLAG_COLUMNS)


def _input_size(card) -> tuple[int, int]:
    size = list(card.input_size)
    return (int(size[0]), int(size[-1]))


@torch.no_grad()
def core_crop_predictions(audit: Audit, rows: np.ndarray, class_index: int, model, card, split: str | None = None,
                          top_k: int = 5, mode: str = "correct", threshold: float = formulas.DEFAULT_BOX_THRESHOLD,
                          batch_size: int = 64) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Predictions after cropping each image to its class's core features (and the boxes used).

    The soft mask is the importance-weighted mean of the core features' NAMs; the square box around
    it is cut out and resized back to the model's input size.
    """
    from .data.images import ImageTensorDataset
    from .explain import neural_activation_maps

    ids, weights = core_features(audit, class_index, split, top_k, mode)
    size = _input_size(card)
    model.eval()
    preds, boxes = [], []
    dataset = ImageTensorDataset([audit.table.path(int(i)) for i in rows], size)
    for start in range(0, len(rows), batch_size):
        x = torch.stack([dataset[j][0] for j in range(start, min(start + batch_size, len(rows)))])
        fmap = model.feature_map(x)
        crops = []
        for b in range(len(x)):
            maps = np.stack([neural_activation_maps(fmap[b : b + 1, d], size)[0] for d in ids]) if ids else \
                np.zeros((0, *size), dtype=np.float32)
            mask = formulas.soft_core_mask(maps, np.asarray(weights)) if ids else np.zeros(size)
            top, left, h, w = formulas.square_box(mask, threshold)
            boxes.append((top, left, h, w))
            crop = x[b : b + 1, :, top : top + h, left : left + w]
            crops.append(F.interpolate(crop, size=size, mode="bilinear", align_corners=False))
        preds.append(model(torch.cat(crops)).argmax(1).numpy())
    return (np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)), boxes


def core_cropping(audit: Audit, flags: pd.DataFrame | None = None, report: CollisionReport | None = None,
                  split: str | None = None, top_k: int = 5, mode: str = "correct",
                  model_folder=None) -> pd.DataFrame:
    """Accuracy before and after core cropping: on the flagged images and on each negative-gap class's
    high-spuriosity set (points). `model_folder`: the model the audit's store belongs to (default: the
    project's)."""
    from .modelio import load_model

    split = split or audit.default_split()
    report = report or collision_report(audit, split, top_k, mode)
    flags = collision_flags(audit, report, split, top_k, mode) if flags is None else flags
    model, card = load_model(model_folder or audit.project.model_folder)
    out = []
    for c in report.negative:
        sets = {"flagged": flags.loc[(flags["class_index"] == c) & flags["flagged"], "row"].to_numpy(dtype=np.int64),
                "high spuriosity": np.sort(report.gaps.high[c])}
        for name, rows in sets.items():
            if not len(rows):
                continue
            after, _ = core_crop_predictions(audit, rows, c, model, card, split, top_k, mode)
            out.append({"class_index": c, "class": audit.class_names[c], "images": name, "n": len(rows),
                        "acc_before": 100.0 * float((audit.preds[rows] == c).mean()),
                        "acc_after": 100.0 * float((after == c).mean())})
    return pd.DataFrame(out, columns=["class_index", "class", "images", "n", "acc_before", "acc_after"])


# ---- as a background job ----------------------------------------------------------------------------
CROP_RESULT = "core_cropping.csv"
INLINE_CROP_LIMIT = 256  # more images than this to crop: the page runs it as a job


def crop_result_path(project, split: str | None) -> Path:
    return project.cache_dir / f"{split or 'all'}-{CROP_RESULT}"


def core_cropping_job(ctx, project: str, split: str | None = None, top_k: int = 5, model: str | None = None) -> dict:
    """Core cropping over every negative-gap class; the table is kept in the project's cache as CSV."""
    from .atomic import write_text_atomic
    from .project import Project

    proj = Project.open(Path(project))
    audit = Audit.open(proj, model)
    split = split or audit.default_split()
    ctx.progress(0.1, "collisions and flags")
    report = collision_report(audit, split, int(top_k))
    ctx.progress(0.3, f"cropping the images of {len(report.negative)} negative-gap classes")
    result = core_cropping(audit, None, report, split, int(top_k), model_folder=model)
    path = write_text_atomic(crop_result_path(proj, split), result.to_csv(index=False))
    ctx.log(f"core cropping: {len(result)} rows written to {path}")
    return {"file": str(path), "rows": result.to_dict("records")}
