"""Spurious gaps: the non-overlap clamp, the original code's mistake, pooled and macro gaps, triage gaps."""

from __future__ import annotations

import numpy as np

from spuraudit.analysis import clamped_k, feature_gap, feature_gaps, spurious_gap


def _official_high_set(scores: np.ndarray, k: int) -> np.ndarray:
    """The original code's High: the top-1000 indices put back in ascending score order, then the first k."""
    top = np.argsort(-scores, kind="stable")[:1000]
    ascending = top[np.argsort(scores[top], kind="stable")]
    return ascending[:k]


def test_clamp_five_images_k100_gives_two_disjoint():
    scores = np.array([0.1, 0.5, 0.3, 0.9, 0.7])
    correct = np.array([False, True, False, True, True])
    result = spurious_gap(correct, scores, np.zeros(5, int), k=100)
    assert clamped_k(100, 5) == 2 and result.k[0] == 2
    assert result.high[0].tolist() == [3, 4]  # scores 0.9, 0.7
    assert result.low[0].tolist() == [0, 2]  # scores 0.1, 0.3
    assert not set(result.high[0]) & set(result.low[0])
    assert result.acc_high[0] == 100.0 and result.acc_low[0] == 0.0
    assert result.per_class[0] == 100.0


def test_gap_is_large_where_the_original_code_reports_zero():
    # Ten images of one class; the model is right exactly on the five most spurious ones.
    scores = np.arange(10, dtype=float)
    correct = scores >= 5
    result = spurious_gap(correct, scores, np.zeros(10, int), k=100)
    assert result.per_class[0] == 100.0
    assert result.pooled == 100.0
    # The original selection makes High the bottom images, i.e. High == Low and a gap of 0.
    official_high = _official_high_set(scores, k=5)
    assert sorted(official_high) == sorted(result.low[0])
    assert 100.0 * (correct[official_high].mean() - correct[result.low[0]].mean()) == 0.0


def test_pooled_and_macro_by_hand_with_unranked_and_tiny_classes():
    # class 0: 5 images (k_c = 2), gap 100.  class 1: 6 images (k_c = 3):
    #   Low = scores 1, 2, 3 -> all right (100), High = 6, 5, 4 -> right, wrong, wrong (33.3): gap -66.7.
    # class 2: NaN scores (no spurious feature).  class 3: a single scored image (no High/Low).
    scores = np.r_[[0.1, 0.5, 0.3, 0.9, 0.7], [1, 2, 3, 4, 5, 6], [np.nan, np.nan], [4.0]]
    correct = np.r_[[False, True, False, True, True], [True, True, True, False, False, True], [True, False], [True]]
    labels = np.r_[[0] * 5, [1] * 6, [2] * 2, [3]]
    result = spurious_gap(correct.astype(bool), scores, labels, k=100)
    assert result.classes == [0, 1]
    assert result.skipped == [3]
    assert result.k == {0: 2, 1: 3}
    np.testing.assert_allclose(result.per_class[1], 100 / 3 - 100)
    # pooled: High = 2 + 3 images with 2 + 1 right (60 %), Low = 2 + 3 with 0 + 3 right (60 %)
    np.testing.assert_allclose([result.pooled_acc_high, result.pooled_acc_low, result.pooled], [60.0, 60.0, 0.0])
    np.testing.assert_allclose(result.macro, (100.0 + (100 / 3 - 100)) / 2)


def test_small_k_and_class_filter():
    scores = np.array([0.1, 0.5, 0.3, 0.9, 0.7, 1.0, 2.0])
    correct = np.array([False, True, False, True, True, True, False])
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    result = spurious_gap(correct, scores, labels, k=1, classes=[0])
    assert result.classes == [0]
    assert result.high[0].tolist() == [3] and result.low[0].tolist() == [0]


def test_no_ranked_class_gives_nan():
    result = spurious_gap(np.ones(3, bool), np.full(3, np.nan), np.zeros(3, int))
    assert result.per_class == {} and np.isnan(result.pooled) and np.isnan(result.macro)


def test_feature_gap_by_hand():
    activation = np.array([0.1, 0.9, 0.5, 0.8, 0.2, 0.3, 5.0])
    correct = np.array([False, True, False, True, True, False, True])
    class_mask = np.array([True] * 6 + [False])  # the last image belongs to another class
    # k = 2: top (0.9, 0.8) both right = 100; bottom (0.1, 0.2) = 50
    assert feature_gap(correct, activation, class_mask, k=2) == 50.0
    # k = 25 clamps to 3: top (0.9, 0.8, 0.5) = 66.7; bottom (0.1, 0.2, 0.3) = 33.3
    np.testing.assert_allclose(feature_gap(correct, activation, class_mask, k=25), 100 / 3)
    assert np.isnan(feature_gap(correct, activation, np.eye(7, dtype=bool)[0], k=25))


def test_feature_gaps_vectorised_matches_single():
    rng = np.random.default_rng(1)
    features = rng.random((60, 8))
    features[:, 3] = 0.0  # an all-tied feature stays deterministic
    correct = rng.random(60) < 0.6
    class_mask = rng.random(60) < 0.5
    ids = [7, 0, 3, 5]
    expected = [feature_gap(correct, features[:, d], class_mask, k=10) for d in ids]
    np.testing.assert_allclose(feature_gaps(correct, features, class_mask, ids, k=10), expected)
    assert feature_gaps(correct, features, class_mask, [], k=10).shape == (0,)


def test_high_low_indices_are_the_gaps_sets():
    from spuraudit.analysis import high_low_indices

    rng = np.random.default_rng(3)
    scores = rng.normal(size=60)
    scores[::7] = np.nan
    labels = rng.integers(0, 3, size=60)
    correct = rng.random(60) < 0.5
    sets = high_low_indices(scores, labels, k=5)
    gap = spurious_gap(correct, scores, labels, k=5)
    assert sorted(sets.high) == gap.classes
    for c in gap.classes:
        assert np.array_equal(sets.high[c], gap.high[c]) and np.array_equal(sets.low[c], gap.low[c])
        assert scores[sets.high[c]].min() >= scores[sets.low[c]].max()
