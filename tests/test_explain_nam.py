"""Neural activation maps: per-image normalisation, the all-zero guard, and the model convenience."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spuraudit.explain import nam_for_feature, neural_activation_maps
from spuraudit.modelio.adapter import AuditModel


def tiny_model() -> AuditModel:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU())
    return AuditModel(trunk=trunk, head=nn.Linear(6, 3), mean=[0.5] * 3, std=[0.5] * 3)


def test_all_zero_channel_gives_zero_map():
    fmap = torch.zeros(2, 4, 3, 3)
    fmap[1, 2] = torch.rand(3, 3) + 0.1  # image 1 fires, image 0 does not
    maps = neural_activation_maps(fmap, (12, 12), feature_index=2)
    assert np.isfinite(maps).all()
    assert (maps[0] == 0).all()
    assert maps[1].max() == 1.0


def test_per_image_max_is_exactly_one_and_scale_free():
    rng = torch.Generator().manual_seed(1)
    channel = torch.rand(1, 4, 5, generator=rng)
    fmap = torch.zeros(2, 3, 4, 5)
    fmap[0, 1] = channel[0]
    fmap[1, 1] = 100.0 * channel[0]  # same pattern, 100 times stronger
    fmap[0, 1, 0, 0] = -5.0  # a negative value is clamped to 0
    maps = neural_activation_maps(fmap.numpy(), (16, 20), feature_index=1)  # NumPy input works too
    assert maps.shape == (2, 16, 20) and maps.dtype == np.float32
    assert maps.max(axis=(1, 2)).tolist() == [1.0, 1.0]
    assert maps.min() >= 0.0
    fmap[0, 1, 0, 0] = channel[0, 0, 0]  # undo the negative: image 1 is now image 0 times 100
    same = neural_activation_maps(fmap[:, 1], (16, 20))  # [B, h, w] input
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)


def test_shape_errors():
    with pytest.raises(ValueError):
        neural_activation_maps(torch.zeros(1, 3, 2, 2), (4, 4))  # which channel?
    with pytest.raises(ValueError):
        neural_activation_maps(torch.zeros(1, 2, 2), (4, 4), feature_index=0)


def test_nam_for_feature_matches_feature_map_and_restores_mode():
    model = tiny_model()
    with torch.no_grad():  # channel 0 dead on every image
        model.trunk[2].weight[0] = 0.0
        model.trunk[2].bias[0] = -1.0
    model.train()
    x = torch.rand(3, 3, 16, 16)
    maps = nam_for_feature(model, x, feature_index=4, batch_size=2)
    assert model.training
    assert maps.shape == (3, 16, 16)
    with torch.no_grad():
        expected = neural_activation_maps(model.feature_map(x), (16, 16), feature_index=4)
    np.testing.assert_allclose(maps, expected, atol=1e-6)
    assert (nam_for_feature(model, x, feature_index=0) == 0).all()
    assert nam_for_feature(model, x[:0], feature_index=0).shape == (0, 16, 16)
