"""The one logistic-regression fit behind DFR (L1) and the linear probe (L2)."""

from __future__ import annotations

import numpy as np
import pytest

from spuraudit.logistic import fit_logistic_head


def _two_classes(n: int = 400):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(n, 16)) * 3 + 5).astype(np.float32)  # raw, unstandardised features
    y = (x[:, 0] + 0.3 * x[:, 1] > 6.5).astype(np.int64)
    return x, y


def test_l1_fit_separates_raw_features_and_a_smaller_C_is_sparser():
    x, y = _two_classes()
    w, b = fit_logistic_head(x, y, 2, C=1.0)
    assert w.shape == (2, 16) and b.shape == (2,)
    assert ((x @ w.T + b).argmax(1) == y).mean() > 0.97
    w_strong, _ = fit_logistic_head(x, y, 2, C=0.01)
    assert np.count_nonzero(np.abs(w_strong[1]) > 1e-9) < np.count_nonzero(np.abs(w[1]) > 1e-9)
    np.testing.assert_allclose(w[0], -w[1])  # the binary fit's log-odds split evenly over both rows


def test_l2_fit_multiclass_balanced_and_without_bias():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 8)) * 4
    y = np.repeat([0, 1, 2], [150, 30, 20])
    x = (centres[y] + rng.normal(size=(len(y), 8))).astype(np.float32) * 10 + 3
    for balanced in (False, True):
        w, b = fit_logistic_head(x, y, 3, C=1.0, penalty="l2", class_balanced=balanced)
        assert ((x @ w.T + b).argmax(1) == y).mean() > 0.95
    w, b = fit_logistic_head(x, y, 3, C=1.0, penalty="l2", fit_bias=False)
    assert not b.any()


def test_an_absent_class_gets_a_zero_row_and_bad_arguments_are_refused():
    x, y = _two_classes()
    w, b = fit_logistic_head(x, y, 3, C=1.0)
    assert not w[2].any() and ((x @ w.T + b).argmax(1) != 2).all()
    with pytest.raises(ValueError, match="C must be positive"):
        fit_logistic_head(x, y, 2, C=0)
    with pytest.raises(ValueError, match="penalty"):
        fit_logistic_head(x, y, 2, C=1.0, penalty="l3")
