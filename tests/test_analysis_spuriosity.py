"""Spuriosity scores: the z-score formula, the σ = 0 guard, training-split statistics, rankings."""

from __future__ import annotations

import numpy as np
import pytest

from spuraudit.analysis import fit_spuriosity_stats, spuriosity, spuriosity_ranking

# Class 0 has three images, class 1 two. Feature 0 is constant on class 0.
FEATURES = np.array(
    [
        [2.0, 1.0, 9.0],
        [2.0, 2.0, 9.0],
        [2.0, 3.0, 9.0],
        [0.0, 7.0, 1.0],
        [0.0, 8.0, 2.0],
    ]
)
LABELS = np.array([0, 0, 0, 1, 1])
Z = np.sqrt(1.5)  # (3 - 2) / sqrt(2/3): feature 1 on class 0 has mean 2, population std sqrt(2/3)


def test_single_feature_by_hand_and_nan_for_unranked_class():
    s = spuriosity(FEATURES, LABELS, {0: [1]})
    np.testing.assert_allclose(s[:3], [-Z, 0.0, Z])
    assert np.isnan(s[3:]).all()


def test_constant_feature_contributes_zero():
    s = spuriosity(FEATURES, LABELS, {0: [0, 1]})  # feature 0 has σ = 0 on class 0
    assert np.isfinite(s[:3]).all()
    np.testing.assert_allclose(s[:3], [-Z / 2, 0.0, Z / 2])


def test_empty_feature_list_means_unranked():
    assert np.isnan(spuriosity(FEATURES, LABELS, {0: [], 1: []})).all()


def test_fitted_stats_by_hand():
    stats = fit_spuriosity_stats(FEATURES, LABELS, {0: [1, 0], 1: [2]})
    np.testing.assert_allclose(stats.mean[0], [2.0, 2.0])
    np.testing.assert_allclose(stats.std[0], [np.sqrt(2 / 3), 0.0])
    np.testing.assert_allclose(stats.mean[1], [1.5])
    np.testing.assert_allclose(stats.std[1], [0.5])
    assert stats.n_images == {0: 3, 1: 2}


def test_training_stats_reuse_differs_from_per_split():
    train_features = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # feature 1 on class 0: mean 1, std 1
    train_stats = fit_spuriosity_stats(train_features, np.array([0, 0]), {0: [1]})
    reused = spuriosity(FEATURES, LABELS, {0: [1]}, stats=train_stats)
    per_split = spuriosity(FEATURES, LABELS, {0: [1]})
    np.testing.assert_allclose(reused[:3], [0.0, 1.0, 2.0])  # (r - 1) / 1
    np.testing.assert_allclose(per_split[:3], [-Z, 0.0, Z])
    assert not np.allclose(reused[:3], per_split[:3])


def test_stats_fitted_on_no_image_give_nan_and_missing_pairs_raise():
    stats = fit_spuriosity_stats(FEATURES[3:], LABELS[3:], {0: [1]})  # no class-0 image to fit on
    assert stats.n_images[0] == 0
    assert np.isnan(spuriosity(FEATURES, LABELS, {0: [1]}, stats=stats)[:3]).all()
    with pytest.raises(KeyError):
        spuriosity(FEATURES, LABELS, {0: [2]}, stats=fit_spuriosity_stats(FEATURES, LABELS, {0: [1]}))


def test_ranking_low_to_high_skips_nan_and_other_classes():
    s = np.array([0.5, -1.0, np.nan, 2.0, 0.5, 0.1])
    labels = np.array([0, 0, 0, 0, 1, 0])
    assert spuriosity_ranking(s, labels, 0).tolist() == [1, 5, 0, 3]
    assert spuriosity_ranking(s, labels, 2).size == 0
