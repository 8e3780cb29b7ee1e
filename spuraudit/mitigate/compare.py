"""Parent and mitigated models side by side: accuracy, group accuracy and spurious gaps.

Gaps of a mitigated model are measured on the PARENT's ranking: each image's spuriosity comes from the
audited parent model's features and the project's spurious labels, so the High and Low sets are fixed,
and every model is scored on those same images. (A fine-tuned backbone's feature indices no longer
mean what the labels say, so re-ranking with its own features would measure something else.)

Accuracies and gaps are in percentage points. Two averages are reported and named as such:
`avg_accuracy_plain` (over the split's images, what the MaskTune paper calls "average") and
`avg_accuracy_train_weighted` (group accuracies weighted by each group's share of the training split,
as DFR-style papers report).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..modelio import ModelCard
from ..modelio.card import CARD_FILE
from ..project import Project
from .data import parent_spuriosity, parent_store, spurious_labels
from .evaluate import split_metrics

COLUMN_HELP = {
    "avg_accuracy_plain": "accuracy over all images of the split (plain average; MaskTune's 'average')",
    "avg_accuracy_train_weighted": "group accuracies weighted by the groups' shares of the training split "
                                   "(DFR-style average)",
    "worst_group_accuracy": "lowest accuracy over the (class, attribute) groups",
    "pooled_gap": "accuracy on the pooled High set minus the pooled Low set of the parent's ranking",
    "macro_gap": "mean of the per-class gaps",
    "worst_group_change": "worst-group accuracy minus the original model's (points); a method that did not raise "
                          "it did not help the group that suffers most",
    "verdict": "'worst group did not improve' when the worst-group accuracy is not at least 1 point above the "
               "original model's",
    "cue_coverage": "MaskTune only, when the cue's pixels are known: share of cue-bearing training images with at "
                    "least 80 % of the cue's pixels masked",
}
IMPROVED_BY = 1.0  # points of worst-group accuracy a method must add to count as an improvement


@dataclass
class ComparisonReport:
    """Tables of `compare_models` (points throughout).

    summary: a row per model: model, method, parent, n, avg_accuracy_plain, avg_accuracy_train_weighted,
      worst_group, worst_group_accuracy, pooled_gap, pooled_ci_low, pooled_ci_high, macro_gap,
      cue_coverage (MaskTune with known cue pixels, else NaN), worst_group_change, verdict (`flag_worst_group`);
    per_class_accuracy: model, class, accuracy; groups: model, group, n, accuracy;
    gaps: model, class_index, class, k, acc_high, acc_low, gap, ci_low, ci_high (95 % bootstrap);
    split, k: what was compared; ranked_by: the parent model whose ranking fixes High/Low.
    """

    summary: pd.DataFrame
    per_class_accuracy: pd.DataFrame
    groups: pd.DataFrame
    gaps: pd.DataFrame
    split: str
    k: int
    ranked_by: str


def _card(folder: Path) -> ModelCard:
    return ModelCard.from_yaml((folder / CARD_FILE).read_text(), str(folder / CARD_FILE))


def flag_worst_group(summary: pd.DataFrame, original: str) -> None:
    """Add `worst_group_change` (points against the original model) and `verdict` to the summary, in place.

    A mitigated model whose worst group is not at least `IMPROVED_BY` points above the original's is
    flagged 'worst group did not improve', whatever its average: helping that group is the point."""
    base = summary.loc[summary["model"] == original, "worst_group_accuracy"]
    base_acc = float(base.iloc[0]) if len(base) else float("nan")
    change = summary["worst_group_accuracy"] - base_acc
    summary["worst_group_change"] = change
    verdict = []
    for name, delta in zip(summary["model"], change):
        if name == original:
            verdict.append("original")
        elif not np.isfinite(delta):
            verdict.append("no groups to judge")
        elif delta < IMPROVED_BY:
            verdict.append("worst group did not improve")
        else:
            verdict.append("worst group improved")
    summary["verdict"] = verdict


def compare_models(
    project: Project,
    model_folders,
    split: str = "test",
    k: int = 100,
    parent_folder: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    extract_missing: bool = True,
) -> ComparisonReport:
    """Compare models on one split of the project, gaps on the parent's fixed High/Low sets.

    model_folders: model folders (the parent may be among them); parent_folder: whose ranking fixes
    the sets (default: the project's model); k: images per end of each class's ranking, clamped to
    ⌊n_c / 2⌋; extract_missing: compute a model's features when its store is missing (the app passes
    False and never computes while a person waits: a missing store is then an error).
    """
    from .. import analysis

    table = project.table
    labels = table.labels
    parent_folder = Path(parent_folder or project.model_folder)
    pstore = parent_store(project, parent_folder) if extract_missing else project.feature_store(parent_folder)
    if pstore is None:
        raise FileNotFoundError(f"features of the parent model {parent_folder.name} are not extracted yet.")
    spurious = spurious_labels(project)
    sets = None
    if spurious:
        scores = parent_spuriosity(project, pstore, spurious)
        scores = np.where(table.split_mask(split), scores, np.nan)
        sets = analysis.spurious_gap(np.asarray(pstore.preds) == labels, scores, labels, k=k)

    group_ids = table.group_ids() if table.group_columns else None  # seconds on a million rows: once
    summary, per_class, groups, gaps = [], [], [], []
    for folder in map(Path, model_folders):
        card = _card(folder)
        store = project.feature_store(folder)
        if store is None:
            if not extract_missing:
                raise FileNotFoundError(f"features of model {folder.name} are not extracted yet.")
            store = project.extract(folder)
        preds = np.asarray(store.preds)
        correct = preds == labels
        m = split_metrics(table, preds, split, group_ids)
        row = {
            "model": card.name,
            "method": card.method or ("parent" if folder.resolve() == parent_folder.resolve() else "original"),
            "parent": card.parent,
            "n": m["n"],
            "avg_accuracy_plain": m["accuracy"],
            "avg_accuracy_train_weighted": m.get("weighted_accuracy", np.nan),
            "worst_group": m.get("worst_group"),
            "worst_group_accuracy": m.get("worst_group_accuracy", np.nan),
            "pooled_gap": np.nan, "pooled_ci_low": np.nan, "pooled_ci_high": np.nan, "macro_gap": np.nan,
        }
        per_class += [{"model": card.name, "class": c, "accuracy": a} for c, a in m["per_class_accuracy"].items()]
        groups += [{"model": card.name, "group": g, "accuracy": a} for g, a in m.get("group_accuracy", {}).items()]
        if sets is not None and sets.high:
            class_gaps = []
            for c in sorted(sets.high):
                hi, lo = np.asarray(sets.high[c]), np.asarray(sets.low[c])
                gap = 100.0 * (correct[hi].mean() - correct[lo].mean())
                ci = analysis.bootstrap_gap_ci(correct, hi, lo, n_boot=n_boot, seed=seed)
                class_gaps.append(gap)
                gaps.append({"model": card.name, "class_index": c, "class": table.class_names[c], "k": len(hi),
                             "acc_high": 100.0 * correct[hi].mean(), "acc_low": 100.0 * correct[lo].mean(),
                             "gap": gap, "ci_low": ci[0], "ci_high": ci[1]})
            all_hi = np.concatenate([np.asarray(sets.high[c]) for c in sorted(sets.high)])
            all_lo = np.concatenate([np.asarray(sets.low[c]) for c in sorted(sets.low)])
            pooled_ci = analysis.bootstrap_pooled_gap_ci(correct, sets.high, sets.low, n_boot=n_boot, seed=seed)
            row.update(pooled_gap=100.0 * (correct[all_hi].mean() - correct[all_lo].mean()),
                       pooled_ci_low=pooled_ci[0], pooled_ci_high=pooled_ci[1], macro_gap=float(np.mean(class_gaps)))
        coverage = (card.metrics or {}).get("diagnostics", {}).get("cue_coverage", {})
        row["cue_coverage"] = coverage.get("cue_images_covered_pct", np.nan)
        summary.append(row)

    summary = pd.DataFrame(summary)
    flag_worst_group(summary, _card(parent_folder).name)
    if groups:
        ids, names = group_ids
        counts = np.bincount(ids[table.split_mask(split)], minlength=len(names))
        n_by_name = {name: int(counts[g]) for g, name in enumerate(names)}
        for g in groups:
            g["n"] = n_by_name.get(g["group"], 0)
    return ComparisonReport(
        summary=summary,
        per_class_accuracy=pd.DataFrame(per_class, columns=["model", "class", "accuracy"]),
        groups=pd.DataFrame(groups, columns=["model", "group", "n", "accuracy"]),
        gaps=pd.DataFrame(gaps, columns=["model", "class_index", "class", "k", "acc_high", "acc_low", "gap",
                                         "ci_low", "ci_high"]),
        split=split,
        k=k,
        ranked_by=_card(parent_folder).name,
    )
