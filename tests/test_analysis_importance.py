"""Top features per class: image sets, importance I[c, d], top features and top images."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from spuraudit.analysis import (
    class_feature_importance,
    empty_image_sets,
    image_set_mask,
    image_set_sizes,
    top_features,
    top_images,
)
from spuraudit.analysis import importance as importance_module

# Three images, two features, two classes. Image 1 is labelled 0 but predicted 1.
FEATURES = np.array([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
HEAD = np.array([[1.0, -1.0], [2.0, 0.5]])
LABELS = np.array([0, 0, 1])
PREDS = np.array([0, 1, 1])


def test_image_set_mask_modes():
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 0, 2])
    assert image_set_mask(labels, preds, 0, "predicted").tolist() == [True, False, False, True, False]
    assert image_set_mask(labels, preds, 0, "correct").tolist() == [True, False, False, False, False]
    assert image_set_mask(labels, preds, 0, "labelled").tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError):
        image_set_mask(labels, preds, 0, "everything")


def test_importance_three_images_by_hand():
    # correct: S_0 = {0}, S_1 = {2}.  I[0] = [1*1, 2*-1], I[1] = [5*2, 4*0.5]
    np.testing.assert_allclose(
        class_feature_importance(FEATURES, HEAD, LABELS, PREDS, mode="correct"), [[1.0, -2.0], [10.0, 2.0]]
    )
    # predicted: S_0 = {0}, S_1 = {1, 2}, mean [4, 2] -> I[1] = [8, 1]
    np.testing.assert_allclose(
        class_feature_importance(FEATURES, HEAD, LABELS, PREDS, mode="predicted"), [[1.0, -2.0], [8.0, 1.0]]
    )
    # labelled: S_0 = {0, 1}, mean [2, 1] -> I[0] = [2, -1]
    np.testing.assert_allclose(
        class_feature_importance(FEATURES, HEAD, LABELS, PREDS, mode="labelled"), [[2.0, -1.0], [10.0, 2.0]]
    )


def test_default_mode_is_correct():
    np.testing.assert_allclose(
        class_feature_importance(FEATURES, HEAD, LABELS, PREDS),
        class_feature_importance(FEATURES, HEAD, LABELS, PREDS, mode="correct"),
    )


def test_empty_class_gets_nan_row_and_is_reported():
    head = np.vstack([HEAD, [[1.0, 1.0]]])  # a third class no image belongs to
    importance = class_feature_importance(FEATURES, head, LABELS, PREDS, mode="correct")
    assert importance.shape == (3, 2)
    assert np.isnan(importance[2]).all() and not np.isnan(importance[:2]).any()
    assert empty_image_sets(LABELS, PREDS, 3, "correct").tolist() == [2]
    assert image_set_sizes(LABELS, PREDS, 3, "predicted").tolist() == [1, 2, 0]
    assert top_features(importance, 2)[2].tolist() == [-1, -1]


def test_importance_chunked_and_memmap_match_a_plain_loop(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    n, d, c = 40, 5, 4
    features = rng.random((n, d)).astype(np.float32)
    head = rng.normal(size=(c, d))
    labels = rng.integers(0, c, n)
    preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, c, n))
    expected = np.stack(
        [features[(labels == k) & (preds == k)].astype(np.float64).mean(0) * head[k] for k in range(c)]
    )
    store = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(n, d))
    store[:] = features
    monkeypatch.setattr(importance_module, "_ROW_CHUNK", 7)  # several chunks, classes split across them
    np.testing.assert_allclose(class_feature_importance(store, head, labels, preds), expected, rtol=1e-12)


def test_importance_rejects_out_of_range_labels():
    with pytest.raises(ValueError):
        class_feature_importance(FEATURES, HEAD, np.array([0, 0, 2]), PREDS)


def test_top_features_order_ties_and_clamp():
    importance = np.array([[0.1, 0.5, 0.5, -1.0], [np.nan] * 4, [3.0, np.nan, 1.0, 2.0]])
    assert top_features(importance, 3).tolist() == [[1, 2, 0], [-1, -1, -1], [0, 3, 2]]
    assert top_features(importance, 10).shape == (3, 4)  # k clamped to D
    assert top_features(importance, 4)[2].tolist() == [0, 3, 2, -1]


def test_top_images_largest_smallest_ties_and_nan():
    values = np.array([3.0, 1.0, 3.0, 2.0, 5.0, np.nan])
    mask = np.array([True, True, True, True, False, True])
    assert top_images(values, mask, 2).tolist() == [0, 2]  # tie at 3.0: lower index first
    assert top_images(values, mask, 2, largest=False).tolist() == [1, 3]
    assert top_images(values, mask, 10).tolist() == [0, 2, 3, 1]  # image 4 masked, image 5 NaN
    assert top_images(values, np.zeros(6, bool), 3).size == 0


def test_analysis_import_does_not_pull_sklearn_or_torch():
    code = "import sys, spuraudit.analysis; print('sklearn' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
