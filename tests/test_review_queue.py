"""The review queue's pure functions: which pairs, their state, the filters and the evidence tables."""

from __future__ import annotations

import pandas as pd

from spuraudit.autolabel.clip import clip_evidence_table
from spuraudit.autolabel.review_queue import (
    evidence_table,
    filter_queue,
    history_table,
    override_answer,
    progress_counts,
    queue_pairs,
    review_table,
)
from spuraudit.autolabel.segmentation import segmentation_evidence_table
from spuraudit.labels import LabelStore


class _Audit:
    """The two things `queue_pairs` asks an audit: class names and each class's top features."""

    class_names = ["cat", "dog"]
    tops = {0: [7, 3], 1: [3, 9]}

    def top_features(self, c, k, split=None, mode="correct"):
        return pd.DataFrame({"feature": self.tops[c][:k]})


def test_queue_lists_top_features_then_other_voted_pairs_per_class():
    pairs = queue_pairs(_Audit(), 2, "test", "correct", voted=[(0, 50), (1, 9), (0, 1)])
    assert pairs == [(0, 7, 1), (0, 3, 2), (0, 1, None), (0, 50, None), (1, 3, 1), (1, 9, 2)]


def _store(tmp_path) -> LabelStore:
    store = LabelStore(tmp_path / "labels.db")
    store.add_vote(0, 7, "background", "ana", confidence=4)
    store.add_vote(0, 7, "main_object", "bo")  # ana and bo disagree on (0, 7)
    store.add_vote(0, 3, "main_object", "bo")
    store.replace_machine_votes("auto:segmentation", [
        {"class_index": 0, "feature_index": 3, "answer": "background"},  # overridden by bo's vote
        {"class_index": 1, "feature_index": 3, "answer": "background"},  # machine only: to confirm
    ])
    return store


def test_review_table_and_filters(tmp_path):
    store = _store(tmp_path)
    pairs = queue_pairs(_Audit(), 2, None, "correct")
    table = review_table(pairs, store.votes(), "ana")
    rows = {(r.class_index, r.feature_index): r for r in table.itertuples()}
    assert rows[(0, 7)].status == "ambiguous" and rows[(0, 7)].disagreement and rows[(0, 7)].mine == "background"
    assert rows[(0, 3)].status == "core" and not rows[(0, 3)].proposed and rows[(0, 3)].n_machine == 1
    assert rows[(1, 3)].status == "spurious" and rows[(1, 3)].proposed
    assert rows[(1, 9)].status == "unlabelled" and rows[(1, 9)].n_human == 0

    def pairs_of(frame):
        return list(zip(frame["class_index"], frame["feature_index"]))

    assert pairs_of(filter_queue(table, "unreviewed")) == [(1, 3), (1, 9)]
    assert pairs_of(filter_queue(table, "not mine")) == [(0, 3), (1, 3), (1, 9)]
    assert pairs_of(filter_queue(table, "disagree")) == [(0, 7)]
    assert pairs_of(filter_queue(table, "to confirm")) == [(1, 3)]
    assert pairs_of(filter_queue(table, "all", classes=[1])) == [(1, 3), (1, 9)]
    assert progress_counts(table) == {"total": 4, "reviewed": 2, "mine": 1, "to_confirm": 1}
    assert list(history_table(store.history(0, 7))["annotator"]) == ["ana", "bo"]


def test_overrides_and_evidence_tables():
    assert override_answer("background") == "main_object"
    assert override_answer("separate_object") == "main_object"
    assert override_answer("main_object") == "background"
    seg = segmentation_evidence_table({"images": [4, 2], "activation": [1.0, 0.5], "per_image": {
        "iou": [0.1, 0.2], "mass_inside": [0.3, 0.4], "lift": [1.0, 2.0], "mask_area": [0.3, 0.2]}})
    assert seg.to_dict("list") == {"image": [4, 2], "activation": [1.0, 0.5], "IoU": [0.1, 0.2],
                                   "mass inside": [0.3, 0.4], "lift": [1.0, 2.0], "object area": [0.3, 0.2]}
    clip = clip_evidence_table({"texts": ["cat", "water"], "text_answers": ["main_object", "background"],
                                "mean_similarity": {"whole": [0.3, 0.2], "nam_crop": [0.25, 0.28]},
                                "decision_scores": [0.25, 0.28]})
    assert list(clip.columns) == ["text", "answer", "whole", "nam_crop", "decision score"]
    # The page finds each table through the labeler named in the evidence.
    assert evidence_table({"labeler": "segmentation", "images": [4]}).columns[0] == "image"
    assert list(evidence_table({"labeler": "clip", "texts": []}).columns)[:2] == ["text", "answer"]
    assert evidence_table({"labeler": "nobody"}) is None
