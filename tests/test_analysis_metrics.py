"""Accuracy metrics (points) and AUROC (fraction)."""

from __future__ import annotations

import numpy as np

from spuraudit.analysis import (
    accuracy,
    auroc,
    average_ranks,
    group_accuracies,
    per_class_accuracy,
    worst_group_accuracy,
)


def test_accuracy_in_points():
    assert accuracy(np.array([True, False, True, True])) == 75.0
    assert np.isnan(accuracy(np.array([], dtype=bool)))


def test_group_and_worst_group():
    correct = np.array([True, False, True, True, False])
    groups = np.array([0, 0, 1, 1, 5])
    assert group_accuracies(correct, groups) == {0: 50.0, 1: 100.0, 5: 0.0}
    assert worst_group_accuracy(correct, groups) == 0.0


def test_per_class_accuracy():
    result = per_class_accuracy(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), num_classes=4)
    np.testing.assert_allclose(result, [50.0, 100.0, 0.0, np.nan])


def test_average_ranks_with_ties():
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_auroc_by_hand():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered right
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == 0.75
    # a tied positive/negative pair counts one half: (0.5 + 1) / 2
    assert auroc(np.array([1.0, 1.0, 2.0]), np.array([True, False, True])) == 0.75
    assert np.isnan(auroc(np.array([1.0, 2.0]), np.array([True, True])))


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.integers(0, 6, 200).astype(float)  # many ties
        positive = rng.random(200) < 0.3 + 0.08 * scores
        np.testing.assert_allclose(auroc(scores, positive), roc_auc_score(positive, scores), rtol=1e-12)


def test_worst_group_names_the_group_and_ties_go_to_the_lowest_id():
    from spuraudit.analysis import worst_group

    correct = np.array([True, False, False, True, True, True])
    assert worst_group(correct, np.array([3, 3, 1, 1, 2, 2])) == (1, 50.0)
    assert worst_group(np.array([], dtype=bool), np.array([], dtype=int))[0] is None


def test_weighted_group_accuracy_renormalises_over_present_groups():
    from spuraudit.analysis import weighted_group_accuracy

    assert weighted_group_accuracy({"a": 100.0, "b": 50.0}, {"a": 0.3, "b": 0.1, "c": 0.6}) == 87.5
    assert np.isnan(weighted_group_accuracy({"a": 100.0}, {"b": 1.0}))


def test_high_low_gap_by_hand():
    from spuraudit.analysis import high_low_gap

    correct = np.array([True, True, False, False, True])
    assert high_low_gap(correct, [0, 1, 4], [2, 3]) == (100.0, 0.0, 100.0)
    assert np.isnan(high_low_gap(correct, [], [2])[2])


def test_accuracy_along_ranking_equal_count_bins():
    from spuraudit.analysis import accuracy_along_ranking, ranking_bins

    # 40 images -> 2 bins of 20: the first all wrong, the second all right.
    correct = np.r_[np.zeros(20, bool), np.ones(20, bool)]
    start, end, acc = accuracy_along_ranking(correct)
    assert ranking_bins(40) == 2 and acc.tolist() == [0.0, 100.0]
    assert start.tolist() == [0.0, 0.5] and end.tolist() == [0.5, 1.0]
    # Bins are closed on the right, as quantiles of the positions: 5 images in 2 bins split 3 / 2.
    _, _, acc = accuracy_along_ranking(np.array([True, True, False, False, False]), bins=2)
    assert acc.tolist() == [100.0 * 2 / 3, 0.0]
    assert ranking_bins(10_000) == 10 and ranking_bins(3) == 2
    assert [len(a) for a in accuracy_along_ranking(np.array([], dtype=bool))] == [0, 0, 0]
