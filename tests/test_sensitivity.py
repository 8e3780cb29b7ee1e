"""Feature sensitivity: masked corruptions, their formulas, and the demo's planted cue.

The demo's cue is found from ground truth, never by name or index: the class whose training images
carry the cue most often, and among its top features the one whose activation best separates its
test images with the cue from those without (AUROC over the object-free cue column; the test split
carries the cue on half of each class, so both sides are measured).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spuraudit.analysis import auroc
from spuraudit.analysis.sensitivity import accuracy_drop, activation_drop, relative_core_sensitivity
from spuraudit.explain.corrupt import CORRUPTIONS, corrupt, feature_mask, gray, noise, rotate_patches
from spuraudit.explain.nam import nam_for_feature

from .test_demo_audit import DISCOVERY_K, SQUARE_AUROC


# ---- the corruptions -------------------------------------------------------------------------------
def _images(seed: int = 0, b: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_zero_mask_changes_nothing(name):
    x = _images()
    out = corrupt(name, x, np.zeros((3, 16, 16), dtype=np.float32), seed=1)
    assert torch.allclose(out, x, atol=1e-6)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_only_the_masked_half_changes(name):
    x = _images()
    mask = np.zeros((3, 16, 16), dtype=np.float32)
    mask[:, :, :8] = 1.0  # the left half; patches of 4 px tile it exactly
    out = corrupt(name, x, mask, seed=1)
    assert torch.allclose(out[..., 8:], x[..., 8:], atol=1e-6)
    assert not torch.allclose(out[..., :8], x[..., :8], atol=1e-3)


def test_gray_under_a_full_mask_is_the_luminance_in_every_channel():
    x = _images()
    out = gray(x, np.ones((3, 16, 16), dtype=np.float32))
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for channel in range(3):
        assert torch.allclose(out[:, channel], expected, atol=1e-6)


def test_noise_is_clamp_of_x_plus_sigma_z_times_m_and_seeded():
    x = _images()
    mask = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    out = corrupt("noise", x, mask, seed=7, sigma=0.25)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    expected = (x + 0.25 * z * torch.as_tensor(mask)[:, None]).clamp(0, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out, corrupt("noise", x, mask, seed=7, sigma=0.25))
    assert not torch.equal(out, corrupt("noise", x, mask, seed=8, sigma=0.25))
    assert torch.equal(noise(x, mask, torch.Generator().manual_seed(0), sigma=0.0), x)


def test_rotated_patches_keep_each_patch_pixels():
    x = _images(b=2, size=16)
    out = rotate_patches(x, np.ones((2, 16, 16), dtype=np.float32), torch.Generator().manual_seed(3), patch=4)
    for i in range(0, 16, 4):
        for j in range(0, 16, 4):
            before = x[:, :, i:i + 4, j:j + 4].reshape(2, 3, -1).sort(dim=-1).values
            after = out[:, :, i:i + 4, j:j + 4].reshape(2, 3, -1).sort(dim=-1).values
            assert torch.allclose(before, after)
    assert not torch.allclose(out, x)


def test_unknown_corruption_names_the_choices():
    with pytest.raises(ValueError, match="gray"):
        corrupt("melt", _images(), np.zeros((3, 16, 16), dtype=np.float32))


# ---- the formulas ----------------------------------------------------------------------------------
def test_relative_core_sensitivity_values():
    assert relative_core_sensitivity(100.0, 0.0) == pytest.approx(1.0)
    assert relative_core_sensitivity(0.0, 100.0) == pytest.approx(-1.0)
    assert relative_core_sensitivity(70.0, 70.0) == pytest.approx(0.0)
    # ā = 0.8, bound 2·min(0.8, 0.2) = 0.4: (0.9 − 0.7) / 0.4
    assert relative_core_sensitivity(90.0, 70.0) == pytest.approx(0.5)
    assert np.isnan(relative_core_sensitivity(100.0, 100.0))


def test_drops():
    assert accuracy_drop(np.array([1, 1, 1, 0], bool), np.array([1, 0, 0, 0], bool)) == pytest.approx(50.0)
    assert activation_drop(np.array([2.0, 2.0]), np.array([1.0, 0.0])) == pytest.approx(75.0)
    assert np.isnan(activation_drop(np.zeros(3), np.zeros(3)))
    with pytest.raises(ValueError):
        accuracy_drop(np.ones(3, bool), np.ones(2, bool))


# ---- the demo's planted cue ------------------------------------------------------------------------
def _cue(project):
    from spuraudit.data.demo import CUE_COLUMN

    table = project.table
    cue = table.frame[CUE_COLUMN].to_numpy().astype(bool)
    train = table.split_mask("train")
    rates = [cue[train & (table.labels == c)].mean() for c in range(table.num_classes)]
    return cue, int(np.argmax(rates))


@pytest.fixture
def cue_setup(demo_copy):
    from spuraudit.audit import Audit

    project = demo_copy
    audit = Audit.open(project)
    cue, cls = _cue(project)
    rows = audit.class_rows(cls, "test")
    # Among ten classes the digit's shapes rank above the square: look as deep as a reviewer does.
    top = [int(d) for d in audit.top_features(cls, k=DISCOVERY_K, split="test")["feature"]]
    separation = {d: auroc(np.asarray(audit.features[rows, d], dtype=np.float64), cue[rows]) for d in top}
    cue_feature = max(separation, key=separation.get)
    assert separation[cue_feature] > 0.9, separation  # the cue has a feature of its own
    square = sorted(d for d, score in separation.items() if score >= SQUARE_AUROC)
    return project, audit, cls, top, cue_feature, square


def test_the_cue_features_are_the_most_sensitive_to_graying(cue_setup):
    """The square is pure red: graying removes exactly what a square detector sees. (Noise is no such test:
    a saturated red square stays red under σ = 0.25, while thin strokes do not.)"""
    from spuraudit.sensitivity import load_report, measure_sensitivity, save_report

    project, audit, cls, top, cue_feature, square = cue_setup
    report = measure_sensitivity(project, classes=[cls], features={cls: top}, k=50, max_images=50)
    rows = report.features.set_index("feature")
    assert list(rows.index) == top and (rows["n"] == 50).all()
    for column in ("act_drop_gray", "drop_gray"):
        assert rows[column].idxmax() in square, (column, square, rows[column].to_dict())
    # noise on the cue's region silences part of the cue feature and costs the model its decisions
    assert rows.loc[cue_feature, "act_drop_noise"] > 0 and rows.loc[cue_feature, "drop_noise"] > 0
    # accuracy is measured on the same images as the drops: each feature's top images of the class
    for d in top:
        images = audit.feature_images(cls, d, k=50, split=report.params["split"], mode="labelled")
        stored = 100.0 * float((audit.preds[images] == cls).mean())
        assert abs(rows.loc[d, "acc_clean"] - stored) <= 100.0 / len(images), (d, rows.loc[d, "acc_clean"], stored)
    path = save_report(project, report, None, report.params["split"])
    again = load_report(project, None, report.params["split"])
    assert path.is_file() and again.features["feature"].tolist() == top


def test_core_and_spurious_accuracy_follow_their_definitions(cue_setup):
    """On a model that uses the cue: noise on the cue's region (core accuracy) costs accuracy, noise on no
    region (no core labels) costs nothing, σ = 0 changes nothing, and the numbers are those of the
    formula x' = clamp(x + σ·N(0,1) ⊙ m, 0, 1) computed here on its own."""
    from spuraudit.sensitivity import core_spurious_accuracy
    from spuraudit.training import load_tensors

    project, audit, cls, top, cue_feature, square = cue_setup
    model, card = project.load_model()
    model.eval()
    strong = core_spurious_accuracy(model, audit, cls, core=[], spurious=[cue_feature], split="test",
                                    max_images=120, sigma=1.0, seed=0, input_size=card.input_size)
    assert strong["spurious_accuracy"] == strong["acc_clean"]  # no core features: nothing noised
    assert strong["core_accuracy"] < strong["acc_clean"] - 10  # the cue's region carries the decision
    assert strong["rcs"] < 0  # relies on the cue, by the sign convention

    shape = [d for d in top if d not in square][:1]  # a top feature that is not the square's
    zero = core_spurious_accuracy(model, audit, cls, core=shape, spurious=[cue_feature], split="test",
                                  max_images=60, sigma=0.0, seed=0, input_size=card.input_size)
    assert zero["core_accuracy"] == zero["spurious_accuracy"] == zero["acc_clean"]

    # the definition, computed independently on the same images
    rows = audit.class_rows(cls, "test")
    rows = rows[np.linspace(0, len(rows) - 1, 120).round().astype(int)] if len(rows) > 120 else rows
    x = load_tensors([audit.table.paths[int(r)] for r in rows], tuple(card.input_size))
    m = torch.as_tensor(nam_for_feature(model, x, cue_feature))[:, None]
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        preds = model((x + 1.0 * z * m).clamp(0, 1)).argmax(1).numpy()
    assert strong["core_accuracy"] == pytest.approx(100.0 * float((preds == cls).mean()))
    assert np.allclose(feature_mask(model, x[:4], [cue_feature]), m[:4, 0].numpy())
