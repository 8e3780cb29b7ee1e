"""The built-in demo is a real bias case, and the audit finds its planted cue on held-out images."""

from __future__ import annotations

import numpy as np

from spuraudit.analysis import auroc
from spuraudit.audit import Audit
from spuraudit.data.demo import CUE_COLUMN, DemoSpec
from spuraudit.modelio import load_model

SPEC = DemoSpec()
CUE_CLASS = SPEC.cue_class  # the square is planted on most training images of digit 0
DISCOVERY_K = 10  # features per class a reviewer looks at (Spuriosity Rankings' discovery step looks at 15)
SQUARE_AUROC = 0.85  # a feature "detects the square" when it separates square / no square this well


def _square_scores(audit: Audit, k: int = DISCOVERY_K) -> dict[int, float]:
    """AUROC of each of the cue class's top-k features for square / no square, on its own test images."""
    rows = audit.class_rows(CUE_CLASS, "test")
    cue = audit.table.frame[CUE_COLUMN].to_numpy().astype(bool)[rows]
    top = audit.top_features(CUE_CLASS, k=k, split="test")
    return {int(d): auroc(np.asarray(audit.features[rows, int(d)]), cue) for d in top["feature"]}


def _cue_feature(audit: Audit) -> tuple[int, float]:
    """Among the cue class's top features, the one whose activation best separates cue / no cue."""
    scores = _square_scores(audit)
    best = max(scores, key=scores.get)
    return best, scores[best]


def square_features(audit: Audit) -> list[int]:
    """Ground truth: the cue class's top features that detect the square (spurious: off the digit)."""
    return sorted(d for d, score in _square_scores(audit).items() if score >= SQUARE_AUROC)


def test_demo_is_a_real_bias_case(demo_project):
    _, card = load_model(demo_project.model_folder)
    metrics = card.metrics
    assert metrics["test_worst_group_accuracy"] <= metrics["test_accuracy"] - 30
    audit = Audit(demo_project, demo_project.feature_store())
    summary = audit.summary("test")
    assert abs(summary["accuracy"] - metrics["test_accuracy"]) < 0.1  # store and training agree
    assert summary["worst_group_accuracy"] <= summary["accuracy"] - 30


def test_top_features_contain_the_cue_detector(demo_project):
    audit = Audit(demo_project, demo_project.feature_store(), spurious={})
    feature, score = _cue_feature(audit)
    assert score >= 0.9, f"best top-{DISCOVERY_K} feature {feature} separates cue/no cue with AUROC {score:.3f}"


def test_marking_the_cue_ranks_and_gaps(demo_copy):
    audit = Audit(demo_copy, demo_copy.feature_store(), spurious={})
    feature, _ = _cue_feature(audit)
    demo_copy.labels().add_vote(CUE_CLASS, feature, "background", annotator="tester")
    audit = Audit(demo_copy, demo_copy.feature_store())  # reads the label store
    assert audit.spurious == {CUE_CLASS: [feature]}
    order, scores = audit.ranking(CUE_CLASS, "test")
    cue = audit.table.frame[CUE_COLUMN].to_numpy().astype(bool)[order]
    assert np.all(np.diff(scores) >= 0)
    assert auroc(scores, cue) >= 0.9
    report = audit.gaps("test", k=100)
    assert report.pooled_gap >= 20
    assert report.pooled_ci[0] <= report.pooled_gap <= report.pooled_ci[1]
    assert list(report.per_class["class_index"]) == [CUE_CLASS]  # unranked classes stay out
