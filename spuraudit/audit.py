"""The audit of one (project, model): analysis functions applied to a feature store.

Pages and the CLI ask this object questions ("top features of class c", "the spuriosity ranking",
"the gaps") and get tables back; the maths lives in `spuraudit.analysis`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from . import analysis
from .data.table import ImageTable
from .features import FeatureStore
from .project import Project

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
    def labels(self) -> np.ndarray:
        return self.table.labels

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
        return self.table.class_names

    def default_split(self) -> str:
        splits = self.table.splits
        return "test" if "test" in splits else splits[0]

    def split_mask(self, split: str | None) -> np.ndarray:
        return self.table.split_mask(split)

    # ---- top features ----------------------------------------------------------------------
    def importance(self, split: str | None, mode: str = "correct") -> np.ndarray:
        """I [C, D] over the images of `split` (methods section 2)."""
        m = self.split_mask(split)
        return analysis.class_feature_importance(
            np.asarray(self.features[m]), self.store.head_weight, self.labels[m], self.preds[m], mode=mode
        )

    def top_features(self, class_index: int, k: int = 5, split: str | None = None, mode: str = "correct",
                     triage_k: int = 25) -> pd.DataFrame:
        """The class's top-k features: rank, feature, importance, triage gap (points), label."""
        importance = self.importance(split, mode)
        ids = analysis.top_features(importance, k)[class_index]
        ids = [int(d) for d in ids if d >= 0]
        m = self.split_mask(split)
        class_mask = analysis.image_set_mask(self.labels[m], self.preds[m], class_index, "labelled")
        gaps = analysis.feature_gaps(self.correct[m], np.asarray(self.features[m]), class_mask, ids, k=triage_k)
        labels = self._pair_labels()
        rows = []
        for rank, (d, gap) in enumerate(zip(ids, gaps), start=1):
            rows.append(
                {
                    "rank": rank,
                    "feature": d,
                    "importance": float(importance[class_index, d]),
                    "weight": float(self.store.head_weight[class_index, d]),
                    "triage_gap": float(gap),
                    "label": labels.get((class_index, d), "unlabelled"),
                }
            )
        return pd.DataFrame(rows)

    def _pair_labels(self) -> dict[tuple[int, int], str]:
        if not self.project.labels_path.exists():
            return {}
        return {pair: lab.status for pair, lab in self.project.labels().labels().items()}

    def feature_images(self, class_index: int, feature: int, k: int = 8, split: str | None = None,
                       mode: str = "correct", largest: bool = True) -> np.ndarray:
        """Dataset indices of S_c's top (or bottom) k images by r_d."""
        m = self.split_mask(split)
        in_set = m & analysis.image_set_mask(self.labels, self.preds, class_index, mode)
        values = np.asarray(self.features[:, feature])
        return analysis.top_images(values, in_set, k, largest=largest)

    # ---- spuriosity ------------------------------------------------------------------------
    def spuriosity(self, split: str | None = None) -> np.ndarray:
        """s(x) for every image (NaN outside `split` or in unranked classes).

        Mean and std come from the training split when it exists (settings 'stats' = 'train'), else
        from the split itself, as the original code did.
        """
        m = self.split_mask(split)
        s = np.full(len(self.labels), np.nan)
        if not self.spurious:
            return s
        stats = None
        fit = self.table.fit_split()
        if self.project.settings.get("stats", "train") == "train" and fit is not None:
            fm = self.split_mask(fit)
            stats = analysis.fit_spuriosity_stats(np.asarray(self.features[fm]), self.labels[fm], self.spurious)
        s[m] = analysis.spuriosity(np.asarray(self.features[m]), self.labels[m], self.spurious, stats=stats)
        return s

    def ranking(self, class_index: int, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(dataset indices of the class in `split`, low -> high spuriosity; their scores)."""
        s = self.spuriosity(split)
        order = analysis.spuriosity_ranking(s, self.labels, class_index)
        return order, s[order]

    def gaps(self, split: str | None = None, k: int = 100, n_boot: int = 1000, seed: int = 0) -> GapReport:
        s = self.spuriosity(split)
        result = analysis.spurious_gap(self.correct, s, self.labels, k=k)
        rows = []
        for c, gap in result.per_class.items():
            hi, lo = result.high[c], result.low[c]
            ci = analysis.bootstrap_gap_ci(self.correct, hi, lo, n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "class_index": c,
                    "class": self.class_names[c],
                    "n": int(np.sum(~np.isnan(s) & (self.labels == c))),
                    "k": len(hi),
                    "acc_high": 100.0 * self.correct[hi].mean(),
                    "acc_low": 100.0 * self.correct[lo].mean(),
                    "gap": gap,
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                }
            )
        pooled_ci = analysis.bootstrap_pooled_gap_ci(self.correct, result.high, result.low, n_boot=n_boot, seed=seed)
        per_class = pd.DataFrame(rows)
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
        rows = []
        for g, name in enumerate(names):
            sel = m & (ids == g)
            if sel.any():
                rows.append({"group": name, "n": int(sel.sum()), "accuracy": 100.0 * self.correct[sel].mean()})
        return pd.DataFrame(rows)

    def summary(self, split: str | None = None) -> dict:
        m = self.split_mask(split)
        out = {"split": split or "all", "n": int(m.sum()), "accuracy": 100.0 * float(self.correct[m].mean())}
        per_class = {}
        for c, name in enumerate(self.class_names):
            sel = m & (self.labels == c)
            per_class[name] = 100.0 * float(self.correct[sel].mean()) if sel.any() else float("nan")
        out["per_class_accuracy"] = per_class
        if self.table.group_columns:
            groups = self.group_table(split)
            out["group_accuracy"] = dict(zip(groups["group"], groups["accuracy"]))
            out["worst_group_accuracy"] = float(groups["accuracy"].min())
        return out
