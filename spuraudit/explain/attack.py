"""Feature attacks, the "amplified visual attribute" of Salient ImageNet (docs/methods.md §3).

Gradient ascent on one neural feature r_d(x) with respect to the pixels in [0, 1]:

    x ← clip(x + α · g / ‖g‖₂, 0, 1),   g = ∂ r_d(x) / ∂ x,

with ‖g‖₂ taken over each image's own 3·H·W values, for a fixed number of steps and no projection
onto a norm ball (the original code accepts an ε it never uses). What the attack paints into the
image shows what the feature responds to.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ._model_state import explanation_mode, model_device, model_dtype

REFERENCE_STEP_SIZE = 10.0  # α of the original, at 224 × 224
REFERENCE_SIDE = 224


def default_step_size(height: int, width: int) -> float:
    """α for an H × W input: 10 at 224 × 224, scaled as 10 · sqrt(H · W) / 224.

    A normalised step of L2 length α spread evenly over an image's 3·H·W values moves each value
    by about α / sqrt(3·H·W): the L2 norm of an image that changes by one unit per value grows
    with the square root of the pixel count. Scaling α with sqrt(H·W) keeps that per-pixel change
    (about 0.026 per step) the same at every size; an unscaled α = 10 on a 28 × 28 image would
    move pixels eight times further per step and saturate it at once.
    """
    return REFERENCE_STEP_SIZE * math.sqrt(height * width) / REFERENCE_SIDE


class FeatureAttackResult(NamedTuple):
    """`images`: attacked images [B, 3, H, W] in [0, 1] (a detached tensor on the input's device).
    `activation_before` / `activation_after`: float32 [B], r_d(x) before and after the attack, in
    the units of the pooled feature."""

    images: torch.Tensor
    activation_before: np.ndarray
    activation_after: np.ndarray


def feature_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    feature_index: int,
    steps: int = 100,
    step_size: float | None = None,
    batch_size: int = 32,
) -> FeatureAttackResult:
    """Amplify feature `feature_index` in each image by normalised gradient ascent.

    Images are attacked together in batches but independently: each image's gradient is
    normalised by its own L2 norm (a zero gradient, e.g. a feature dead on that image, gives no
    step rather than a division by zero). The gradient is taken with respect to the input only,
    so no parameter accumulates a `.grad`; the model runs in eval mode and is restored afterwards.

    Args:
        model: an `AuditModel` (needs `features`, taking images in [0, 1]).
        x: images [B, 3, H, W] in [0, 1].
        feature_index: the feature d whose activation r_d is increased.
        steps: ascent steps (100 in the original).
        step_size: α, the L2 length of each step per image; None uses `default_step_size(H, W)`.
        batch_size: images per forward/backward pass.

    Returns:
        `FeatureAttackResult` (images, activation before, activation after).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    height, width = x.shape[-2:]
    alpha = default_step_size(height, width) if step_size is None else float(step_size)
    device, dtype = model_device(model), model_dtype(model)
    attacked, before, after = [], [], []
    with explanation_mode(model, params_require_grad=False):
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].detach().to(device=device, dtype=dtype).clamp(0.0, 1.0)
            adv, act_before, act_after = _ascend(model, batch, feature_index, steps, alpha)
            attacked.append(adv.to(x.device))
            before.append(act_before)
            after.append(act_after)
    if not attacked:
        empty = np.zeros(0, dtype=np.float32)
        return FeatureAttackResult(x.detach().clone(), empty, empty)
    return FeatureAttackResult(torch.cat(attacked), np.concatenate(before), np.concatenate(after))


def _ascend(
    model: torch.nn.Module, x: torch.Tensor, feature_index: int, steps: int, alpha: float
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """`steps` ascent steps on one batch; returns (attacked images, r_d before, r_d after)."""
    adv = x.clone()
    activation_before = None
    with torch.enable_grad():
        for _ in range(steps):
            adv.requires_grad_(True)
            activation = model.features(adv)[:, feature_index]  # [b]
            if activation_before is None:
                activation_before = activation.detach()
            # Images do not interact in eval mode, so the gradient of the sum is each image's own.
            (grad,) = torch.autograd.grad(activation.sum(), adv)
            norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            step = torch.where(norm > 0, grad / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(grad))
            adv = (adv.detach() + alpha * step).clamp(0.0, 1.0)
    with torch.no_grad():
        activation_after = model.features(adv)[:, feature_index]
    if activation_before is None:  # zero steps
        activation_before = activation_after
    return (
        adv.detach(),
        activation_before.float().cpu().numpy(),
        activation_after.float().cpu().numpy(),
    )
