"""The audit of one (project, model): analysis functions applied to a feature store.

Pages and the CLI ask this object questions ("top features of class c", "the spuriosity ranking",
"the gaps") and get tables back; the maths lives in `spuraudit.analysis`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis
from .data.table import ImageTable, table_identity
from .features import FeatureStore
from .featurestats import StoreStats, open_or_build_stats
from .project import Project

_log = logging.getLogger("spuraudit")

IMAGE_SET_HELP = {
    "correct": "images of the class the model classifies correctly (Spuriosity Rankings)",
    "predicted": "images the model predicts as the class (Salient ImageNet)",
    "labelled": "all images labelled with the class",
}


@dataclass
class GapReport:
    per_class: pd.DataFrame  # class, n, k, acc_high, acc_low, gap, ci_low, ci_high (points)
    pooled_gap: float
    pooled_ci: tuple[float, float]
    macro_gap: float
    macro_ci: tuple[float, float]
    high: dict[int, np.ndarray]
    low: dict[int, np.ndarray]


class Audit:
    """Per-class questions read only that class's rows of the store (sorted indices, one fancy read)
    and the statistics kept beside it; no question copies a split or builds a [C, D] matrix for
    one class."""

    def __init__(self, project: Project, store: FeatureStore, spurious: dict[int, list[int]] | None = None):
        self.project = project
        self.store = store
        self.spurious = spurious if spurious is not None else project.spurious_features()

    @classmethod
    def open(cls, project: Project, model_folder: str | Path | None = None) -> "Audit":
        store = project.feature_store(model_folder)
        if store is None:
            raise FileNotFoundError(
                f"features for project '{project.name}' and this model are not extracted yet; "
                f"run `spuraudit extract --project {project.folder.name}`."
            )
        return cls(project, store)

    # ---- basic arrays --------------------------------------------------------------------
    @property
    def table(self) -> ImageTable:
        return self.project.table

    @cached_property
    def stats(self) -> StoreStats:
        """Per-class rows, means and stds of the store (computed once for stores made without them)."""
        return open_or_build_stats(self.store, table_identity(self.project.folder), lambda: self.table,
                                   log=_log.warning)

    @cached_property
    def labels(self) -> np.ndarray:
        return self.stats.labels

    @cached_property
    def preds(self) -> np.ndarray:
        return np.asarray(self.store.preds)

    @cached_property
    def correct(self) -> np.ndarray:
        return self.preds == self.labels

    @property
    def features(self) -> np.ndarray:
        return self.store.features

    @property
    def class_names(self) -> list[str]:
        return list(self.stats.info["class_names"])

    def default_split(self) -> str:
        splits = self.stats.splits
        return "test" if "test" in splits else splits[0]

    def split_mask(self, split: str | None) -> np.ndarray:
        return self.stats.split_mask(split)

    # ---- one class's rows --------------------------------------------------------------------
    def class_rows(self, class_index: int, split: str | None) -> np.ndarray:
        """Ascending dataset indices of the images labelled `class_index` in `split`."""
        return self.stats.class_rows(class_index, split)

    def image_set_rows(self, class_index: int, split: str | None, mode: str = "correct") -> np.ndarray:
        """Ascending dataset indices of S_c in `split` for an image-set mode."""
        if mode == "predicted":
            return np.flatnonzero((self.preds == class_index) & self.split_mask(split))
        rows = self.class_rows(class_index, split)
        if mode == "correct":
            rows = rows[self.preds[rows] == class_index]
        elif mode != "labelled":
            raise ValueError(f"mode must be one of {analysis.IMAGE_SET_MODES}, got {mode!r}")
        return rows

    def rows_of(self, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """float32 features of the given (ascending) rows, optionally only some columns."""
        if columns is None:
            return np.asarray(self.features[rows], dtype=np.float32)  # one fancy read of the rows
        # rows x columns in one fancy read: measured faster on a memory map than rows then columns
        return np.asarray(self.features[rows[:, None], np.asarray(columns)], dtype=np.float32)

    # ---- top features ----------------------------------------------------------------------
    def importance(self, split: str | None, mode: str = "correct") -> np.ndarray:
        """I [C, D] over the images of `split` (docs/methods.md §2), from the stored class means."""
        return analysis.importance_from_means(self.stats.all_means(split, mode), self.store.head_weight)

    def importance_of_class(self, class_index: int, split: str | None, mode: str = "correct") -> np.ndarray:
        """I [D] of one class: its stored mean over S_c times its head weights."""
        mean, _ = self.stats.class_mean(class_index, split, mode)
        return analysis.importance_from_means(mean, self.store.head_weight[class_index])

    def top_features(self, class_index: int, k: int = 5, split: str | None = None, mode: str = "correct",
                     triage_k: int = 25) -> pd.DataFrame:
        """The class's top-k features: rank, feature, importance, triage gap (points), label."""
        importance = self.importance_of_class(class_index, split, mode)
        ids = analysis.top_k(importance, k)
        rows = self.class_rows(class_index, split)
        gaps = analysis.triage_gaps(self.correct[rows], self.rows_of(rows, ids), k=triage_k)
        labels = self._pair_labels()
        out = []
        for rank, (d, gap) in enumerate(zip(ids.tolist(), gaps), start=1):
            out.append(
                {
                    "rank": rank,
                    "feature": d,
                    "importance": float(importance[d]),
                    "weight": float(self.store.head_weight[class_index, d]),
                    "triage_gap": float(gap),
                    "label": labels.get((class_index, d), "unlabelled"),
                }
            )
        return pd.DataFrame(out, columns=["rank", "feature", "importance", "weight", "triage_gap", "label"])

    def _pair_labels(self) -> dict[tuple[int, int], str]:
        """(class, feature) -> label status; re-read only when the label database has changed."""
        path = self.project.labels_path
        if not path.exists():
            return {}
        stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None
                      for p in (path, path.with_name(path.name + "-wal")))
        if getattr(self, "_pair_labels_cache", (None,))[0] != stamp:
            labels = {pair: lab.status for pair, lab in self.project.labels().labels().items()}
            self._pair_labels_cache = (stamp, labels)
        return self._pair_labels_cache[1]

    def feature_images(self, class_index: int, feature: int, k: int = 8, split: str | None = None,
                       mode: str = "correct", largest: bool = True) -> np.ndarray:
        """Dataset indices of S_c's top (or bottom) k images by r_d."""
        rows = self.image_set_rows(class_index, split, mode)
        values = np.asarray(self.features[rows, int(feature)], dtype=np.float64)
        return rows[analysis.top_k(values, k, largest=largest)]

    # ---- spuriosity ------------------------------------------------------------------------
    def _fit_split(self, split: str | None) -> str | None:
        """The split whose μ, σ standardise `split` (the 'stats' setting; docs/methods.md §5)."""
        fit = "train" if "train" in self.stats.splits else None
        if self.project.settings.get("stats", "train") == "train" and fit is not None:
            return fit
        return split

    def spuriosity_of_class(self, class_index: int, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ascending dataset indices of the class in `split`, their s(x)); empty for an unranked class.

        Reads the class's rows and only its spurious columns; μ and σ come from the stored statistics
        (training split by default, else the split itself, as the original code did).
        """
        feature_ids = np.asarray(list(dict.fromkeys(int(d) for d in self.spurious.get(class_index, []))),
                                 dtype=np.int64)
        rows = self.class_rows(class_index, split)
        if feature_ids.size == 0 or rows.size == 0:
            return rows[:0], np.zeros(0)
        mean, std, n_fitted = self.stats.class_mean_std(class_index, self._fit_split(split), feature_ids)
        if n_fitted == 0:
            return rows[:0], np.zeros(0)
        return rows, analysis.mean_zscore(self.rows_of(rows, feature_ids), mean, std)

    def spuriosity(self, split: str | None = None) -> np.ndarray:
        """s(x) for every image (NaN outside `split` or in unranked classes); one class at a time."""
        s = np.full(len(self.labels), np.nan)
        for class_index in sorted(self.spurious):
            rows, scores = self.spuriosity_of_class(class_index, split)
            s[rows] = scores
        return s

    def ranking(self, class_index: int, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(dataset indices of the class in `split`, low -> high spuriosity; their scores)."""
        rows, scores = self.spuriosity_of_class(class_index, split)
        order = analysis.ascending_order(scores)
        return rows[order], scores[order]

    def ranking_ends(self, class_index: int, k: int, split: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(the k lowest-spuriosity images, lowest first; the k highest, highest first).

        The ends of `ranking` without sorting the whole class: equal scores keep the ranking's order
        (lower index lower), so the high end lists them from the higher index down.
        """
        rows, scores = self.spuriosity_of_class(class_index, split)
        low = analysis.top_k(scores, k, largest=False)
        high = len(scores) - 1 - analysis.top_k(scores[::-1], k, largest=True)
        return rows[low], rows[high]

    def gaps(self, split: str | None = None, k: int = 100, n_boot: int = 1000, seed: int = 0) -> GapReport:
        s = self.spuriosity(split)
        result = analysis.spurious_gap(self.correct, s, self.labels, k=k, classes=sorted(self.spurious))
        classes = list(result.per_class)
        cis = analysis.bootstrap_gap_cis(self.correct, [result.high[c] for c in classes],
                                         [result.low[c] for c in classes], n_boot=n_boot, seed=seed)
        rows = []
        for c, ci in zip(classes, cis):
            hi, gap = result.high[c], result.per_class[c]
            rows.append(
                {
                    "class_index": c,
                    "class": self.class_names[c],
                    "n": int(result.n[c]),
                    "k": len(hi),
                    "acc_high": result.acc_high[c],
                    "acc_low": result.acc_low[c],
                    "gap": gap,
                    "ci_low": float(ci[0]),
                    "ci_high": float(ci[1]),
                }
            )
        pooled_ci = analysis.bootstrap_pooled_gap_ci(self.correct, result.high, result.low, n_boot=n_boot, seed=seed)
        per_class = pd.DataFrame(rows, columns=["class_index", "class", "n", "k", "acc_high", "acc_low", "gap",
                                                "ci_low", "ci_high"])
        macro_ci = (
            analysis.bootstrap_mean_ci(per_class["gap"].to_numpy(), n_boot=n_boot, seed=seed)
            if len(per_class) > 1 else (float("nan"), float("nan"))
        )
        return GapReport(per_class, result.pooled, pooled_ci, result.macro, macro_ci, result.high, result.low)

    # ---- accuracy --------------------------------------------------------------------------
    def group_table(self, split: str | None = None) -> pd.DataFrame:
        """Accuracy per group (class × attribute values) in points, with counts."""
        m = self.split_mask(split)
        ids, names = self.table.group_ids()
        per_group = analysis.group_accuracies(self.correct[m], ids[m])
        counts = np.bincount(ids[m], minlength=len(names))
        rows = [{"group": names[g], "n": int(counts[g]), "accuracy": acc} for g, acc in sorted(per_group.items())]
        return pd.DataFrame(rows)

    def summary(self, split: str | None = None) -> dict:
        m = self.split_mask(split)
        out = {"split": split or "all", "n": int(m.sum()), "accuracy": 100.0 * float(self.correct[m].mean())}
        num_classes = len(self.class_names)
        totals = np.bincount(self.labels[m], minlength=num_classes)
        right = np.bincount(self.labels[m], weights=self.correct[m], minlength=num_classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            points = 100.0 * right / totals
        out["per_class_accuracy"] = {name: float(points[c]) if totals[c] else float("nan")
                                     for c, name in enumerate(self.class_names)}
        if self.table.group_columns:
            groups = self.group_table(split)
            out["group_accuracy"] = dict(zip(groups["group"], groups["accuracy"]))
            ids, _ = self.table.group_ids()
            out["worst_group_accuracy"] = analysis.worst_group_accuracy(self.correct[m], ids[m])
        return out
