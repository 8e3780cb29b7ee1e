"""Feature attacks: the activation rises, pixels stay in [0, 1], the model is left untouched."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from spuraudit.explain import default_step_size, feature_attack
from spuraudit.modelio.adapter import AuditModel


def tiny_model() -> AuditModel:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU())
    return AuditModel(trunk=trunk, head=nn.Linear(6, 3), mean=[0.5] * 3, std=[0.5] * 3)


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def test_default_step_size_scales_with_sqrt_pixels():
    assert default_step_size(224, 224) == 10.0
    assert default_step_size(28, 28) == 1.25
    assert math.isclose(default_step_size(112, 224), 10.0 * math.sqrt(112 * 224) / 224)


def test_attack_raises_activation_and_keeps_range():
    model = tiny_model()
    model.train()
    x = images()
    result = feature_attack(model, x, feature_index=3, steps=20)
    adv, before, after = result  # a tuple as well as named fields
    assert adv is result.images and adv.shape == x.shape
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    with torch.no_grad():
        np.testing.assert_allclose(before, model.features(x)[:, 3].numpy(), rtol=1e-5)
        np.testing.assert_allclose(after, model.features(adv)[:, 3].numpy(), rtol=1e-5)
    assert np.all(after > 4 * before) and np.all(after - before > 0.3)
    # no parameter gradients, the mode and requires_grad as they were
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert model.training


def test_images_are_attacked_independently():
    model = tiny_model()
    x = images()
    together = feature_attack(model, x, feature_index=1, steps=5).images
    alone = feature_attack(model, x[1:2], feature_index=1, steps=5).images
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=0)


def test_zero_gradient_leaves_image_unchanged():
    model = tiny_model()
    with torch.no_grad():  # feature 0 dead everywhere: zero gradient
        model.trunk[2].weight[0] = 0.0
        model.trunk[2].bias[0] = -1.0
    x = images(2)
    result = feature_attack(model, x, feature_index=0, steps=5)
    assert torch.equal(result.images, x)
    assert np.all(result.activation_after == 0)
