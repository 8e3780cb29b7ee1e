"""Class activation maps through pytorch-grad-cam on a tiny model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from spuraudit.explain import CAM_METHODS, class_activation_maps
from spuraudit.modelio.adapter import AuditModel


def tiny_model() -> AuditModel:
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU())
    return AuditModel(trunk=trunk, head=nn.Linear(6, 3), mean=[0.5] * 3, std=[0.5] * 3)


def images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ["gradcam", "xgradcam", "GradCAM++", "scorecam"])
def test_maps_shape_and_range(method):
    maps = class_activation_maps(tiny_model(), images(), [0, 1, 2, 0], method=method, batch_size=3)
    assert maps.shape == (4, 16, 16) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.isfinite(maps).all()


def test_target_class_changes_the_map_and_none_means_predicted():
    model = tiny_model()
    x = images()
    class0 = class_activation_maps(model, x, [0] * 4)
    class1 = class_activation_maps(model, x, [1] * 4)
    assert not np.allclose(class0, class1, atol=1e-3)
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    np.testing.assert_allclose(class_activation_maps(model, x, None), class_activation_maps(model, x, predicted))


def test_model_state_is_restored_and_hooks_released():
    model = tiny_model()
    model.train()
    model.trunk.requires_grad_(False)  # a frozen backbone must still give gradient CAMs
    model.head.weight.grad = torch.full_like(model.head.weight, 7.0)
    maps = class_activation_maps(model, images(2), [2, 1], method="layercam")
    assert maps.max() > 0
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == [False] * 4 + [True] * 2
    assert torch.equal(model.head.weight.grad, torch.full_like(model.head.weight, 7.0))
    assert model.head.bias.grad is None and all(p.grad is None for p in model.trunk.parameters())
    assert not model.trunk._forward_hooks and not model.trunk._backward_hooks


def test_bad_method_and_classes_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match="unknown CAM method"):
        class_activation_maps(model, images(1), [0], method="magic")
    with pytest.raises(ValueError):
        class_activation_maps(model, images(1), [3])
    with pytest.raises(ValueError):
        class_activation_maps(model, images(2), [0])


def test_listing_methods_does_not_import_the_package():
    assert {"gradcam", "xgradcam", "gradcam++", "scorecam", "eigencam", "layercam", "hirescam"} <= set(CAM_METHODS)
    code = "import sys; from spuraudit.explain import CAM_METHODS; list(CAM_METHODS); print('pytorch_grad_cam' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert CAM_METHODS["xgradcam"].__name__ == "XGradCAM"
