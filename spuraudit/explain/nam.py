"""Neural activation maps (NAM, docs/methods.md §3): one feature-map channel shown as a heatmap."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._model_state import explanation_mode, model_device, model_dtype


def neural_activation_maps(
    fmap: torch.Tensor | np.ndarray,
    size: Sequence[int],
    feature_index: int | None = None,
) -> np.ndarray:
    """Per-image NAMs of one channel, upsampled to the input size.

    Each map is the channel clamped at 0 (it is post-ReLU already; the clamp guards against other
    layers), upsampled bilinearly to `size` and divided by its own maximum, so every image's
    hottest pixel is exactly 1 whatever the channel's overall scale. (The original divides at the
    feature-map resolution and then upsamples; bilinear upsampling can shave a little off the peak,
    which is why the maximum is taken after it. The maps differ only by that per-image factor.) A
    channel that is zero everywhere on an image gives an all-zero map, where the original divided
    by zero.

    Args:
        fmap: feature maps [B, D, h, w] with `feature_index` given, or one channel [B, h, w].
        size: (H, W) of the model input.
        feature_index: the channel d to take from a [B, D, h, w] input.

    Returns:
        float32 [B, H, W] in [0, 1].
    """
    maps = torch.as_tensor(fmap).detach()
    if maps.ndim == 4:
        if feature_index is None:
            raise ValueError("fmap is [B, D, h, w]: pass feature_index to choose the channel")
        maps = maps[:, feature_index]
    elif maps.ndim != 3 or feature_index is not None:
        raise ValueError(f"fmap must be [B, D, h, w] with feature_index or [B, h, w] without, got {tuple(maps.shape)}")
    height, width = (int(v) for v in size)
    maps = maps.float().clamp_min(0.0)
    maps = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    peak = maps.amax(dim=(1, 2), keepdim=True)
    maps = torch.where(peak > 0, maps / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(maps))
    return maps.cpu().numpy().astype(np.float32, copy=False)


def nam_for_feature(model: torch.nn.Module, x: torch.Tensor, feature_index: int, batch_size: int = 64) -> np.ndarray:
    """NAMs of feature `feature_index` for a batch of images.

    Args:
        model: an `AuditModel` (needs `feature_map`); run in eval mode, then restored.
        x: images [B, 3, H, W] in [0, 1].
        feature_index: the feature d.
        batch_size: images per forward pass.

    Returns:
        float32 [B, H, W] in [0, 1] (see `neural_activation_maps`).
    """
    height, width = x.shape[-2:]
    if x.shape[0] == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    device, dtype = model_device(model), model_dtype(model)
    chunks = []
    with explanation_mode(model, params_require_grad=False), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].to(device=device, dtype=dtype)
            channel = model.feature_map(batch)[:, feature_index]
            chunks.append(neural_activation_maps(channel, (height, width)))
    return np.concatenate(chunks)
