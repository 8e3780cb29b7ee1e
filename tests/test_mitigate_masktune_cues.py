"""MaskTune's masks on planted cues: a cue in any corner is masked, and coverage is measured per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spuraudit.analysis.cues import COVERED_AT, coverage_summary, cue_coverage
from spuraudit.mitigate.masking import HeatmapMaker, mask_batch
from spuraudit.mitigate.planted import POSITIONS, CueSpec, cue_flags, plant
from spuraudit.modelio import ModelCard, build_audit_model
from spuraudit.training import train_classifier


def _cue_only_model(spec: CueSpec, seed: int = 0):
    """A DigitNet whose only evidence is the cue: label 1 = the cue is there, on noise with a faint blob."""
    rng = np.random.default_rng(seed)
    n = 512
    grey = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    labels = rng.integers(0, 2, size=n)
    images, pixels = plant(images, spec, labels == 1)
    card = ModelCard(name="cue", architecture="spuraudit:digitnet", class_names=["no cue", "cue"],
                     input_size=[28, 28], mean=[0.5] * 3, std=[0.5] * 3)
    torch.manual_seed(seed)
    model = build_audit_model(card)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    train_classifier(model, x, torch.as_tensor(labels), epochs=2, seed=seed)
    return model.eval(), x[labels == 1][:64], pixels[labels == 1][:64]


@pytest.mark.parametrize("position", POSITIONS)
def test_a_cue_in_each_corner_is_masked(position):
    spec = CueSpec("square", 3, (0, 200, 255), position)
    model, x, pixels = _cue_only_model(spec)
    with HeatmapMaker(model) as make:
        out = mask_batch(make, x, "top_fraction", 0.25)
    share = cue_coverage(out.masks.numpy(), pixels)
    summary = coverage_summary(share)
    print(position, summary)
    assert summary["cue_images"] == 64
    assert summary["cue_images_covered_pct"] >= 90  # ≥ 80 % of the cue's pixels on ≥ 90 % of the images
    assert np.mean(share >= COVERED_AT) >= 0.9


def test_cue_coverage_counts_hidden_cue_pixels():
    cue = np.zeros((3, 4, 4), bool)
    cue[:, :2, :2] = True
    masks = np.zeros_like(cue)
    masks[0, :2, :2] = True  # all 4 cue pixels
    masks[1, 0, :2] = True  # 2 of 4
    cue[2] = False  # no cue on the third image
    share = cue_coverage(masks, cue)
    assert share[0] == 1.0 and share[1] == 0.5 and np.isnan(share[2])
    assert coverage_summary(share) == {"cue_images": 2, "cue_pixels_masked_pct": 75.0, "cue_images_covered_pct": 50.0}
    with pytest.raises(ValueError, match="same shape"):
        cue_coverage(masks, cue[:2])


def test_planted_cues_land_where_asked():
    images = np.zeros((4, 28, 28, 3), np.uint8)
    for shape in ("square", "bar", "dots", "texture"):
        for position in POSITIONS:
            out, pixels = plant(images, CueSpec(shape, 4, (10, 20, 30), position), np.array([1, 0, 1, 0], bool))
            assert pixels[1].sum() == 0 and pixels[0].sum() > 0 and (out[0][pixels[0]] == (10, 20, 30)).all()
            rows, cols = np.nonzero(pixels[0])
            assert (rows.max() < 14) == position.startswith("top") and (cols.max() < 14) == position.endswith("left")
    tinted, pixels = plant(images, CueSpec("tint", colour=(0, 0, 200), tint=0.5), np.array([1, 0, 0, 0], bool))
    assert pixels[0].all() and tinted[0, 5, 5, 2] == 100 and tinted[1].max() == 0
    flags = cue_flags(np.repeat([0, 1], 100), 0.95, np.random.default_rng(0))
    assert flags[:100].sum() == 95 and flags[100:].sum() == 5
