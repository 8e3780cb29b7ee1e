"""Corruptions restricted to a soft mask (docs/methods.md §8): what a feature's region carries.

Each corruption removes one kind of information where the mask is high and leaves the rest of the
image alone: graying removes colour, blurring removes texture, rotating patches removes shape, and
Salient ImageNet's noise removes (almost) everything. Images are float [B, 3, H, W] in [0, 1]; masks
are float [B, H, W] in [0, 1] (a feature's NAM, or the pixel-wise max of several). The soft ones
blend: x' = m · corrupt(x) + (1 − m) · x. Random corruptions take a seed, so a run can be repeated.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .nam import nam_for_feature

NOISE_SIGMA = 0.25  # Salient ImageNet's σ
BLUR_SIGMA = 2.0  # pixels at 224 px; scaled with the image size (see `blur`)
PATCH_FRACTION = 1 / 4  # patch side as a share of the shorter image side, for `rotate_patches`

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights


def _blend(x: torch.Tensor, corrupted: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = _as_mask(mask, x)
    return (m * corrupted + (1.0 - m) * x).clamp(0.0, 1.0)


def _as_mask(mask, x: torch.Tensor) -> torch.Tensor:
    m = torch.as_tensor(mask, dtype=x.dtype, device=x.device)
    if m.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"mask must be [B, H, W] = {(x.shape[0], *x.shape[-2:])}, got {tuple(m.shape)}")
    return m.clamp(0.0, 1.0)[:, None]


def gray(x: torch.Tensor, mask, generator: torch.Generator | None = None) -> torch.Tensor:
    """Colour removed under the mask: each pixel moves towards its luminance."""
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device)[None, :, None, None]
    luminance = (x * weights).sum(dim=1, keepdim=True).expand_as(x)
    return _blend(x, luminance, mask)


def blur(x: torch.Tensor, mask, generator: torch.Generator | None = None, sigma: float | None = None) -> torch.Tensor:
    """Texture removed under the mask: a Gaussian blur (σ = 2 px at 224 px, scaled to the image)."""
    from torchvision.transforms.functional import gaussian_blur

    if sigma is None:
        sigma = max(BLUR_SIGMA * min(x.shape[-2:]) / 224.0, 0.5)
    kernel = 2 * int(np.ceil(3 * sigma)) + 1
    return _blend(x, gaussian_blur(x, [kernel, kernel], [sigma, sigma]), mask)


def rotate_patches(x: torch.Tensor, mask, generator: torch.Generator | None = None,
                   patch: int | None = None) -> torch.Tensor:
    """Shape removed under the mask: square patches each turned by a random multiple of 90°.

    The patch grid covers the image from the top-left corner; a remainder strip at the right or the
    bottom is left as it is. Each patch of each image draws its own turn (0, 90, 180 or 270°).
    """
    height, width = x.shape[-2:]
    size = patch or max(2, int(min(height, width) * PATCH_FRACTION))
    rows, cols = height // size, width // size
    out = x.clone()
    if rows == 0 or cols == 0:
        return _blend(x, out, mask)
    turns = torch.randint(0, 4, (x.shape[0], rows, cols), generator=generator)
    for i in range(rows):
        for j in range(cols):
            block = x[:, :, i * size:(i + 1) * size, j * size:(j + 1) * size]
            for k in range(1, 4):
                chosen = turns[:, i, j] == k
                if chosen.any():
                    out[chosen, :, i * size:(i + 1) * size, j * size:(j + 1) * size] = torch.rot90(
                        block[chosen], k, dims=(2, 3))
    return _blend(x, out, mask)


def noise(x: torch.Tensor, mask, generator: torch.Generator | None = None, sigma: float = NOISE_SIGMA) -> torch.Tensor:
    """Salient ImageNet's corruption: x' = clamp(x + σ · N(0, 1) ⊙ m, 0, 1).

    Each pixel and channel draws its own N(0, 1) from `generator` (on the CPU, so a seed gives the same
    noise whatever device the images are on); the mask scales it, so it vanishes where m = 0.
    """
    m = _as_mask(mask, x)
    z = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return (x + float(sigma) * z * m).clamp(0.0, 1.0)


Corruption = Callable[..., torch.Tensor]

CORRUPTIONS: dict[str, tuple[Corruption, str]] = {
    "gray": (gray, "colour"),
    "blur": (blur, "texture"),
    "rotate": (rotate_patches, "shape"),
    "noise": (noise, "everything (Gaussian noise, σ = 0.25)"),
}


def corrupt(name: str, x: torch.Tensor, mask, seed: int = 0, **options) -> torch.Tensor:
    """Apply the corruption `name` (a key of CORRUPTIONS) with its own seeded generator."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{name}'; choose one of {', '.join(CORRUPTIONS)}")
    generator = torch.Generator().manual_seed(int(seed))
    return CORRUPTIONS[name][0](x, mask, generator, **options)


def feature_mask(model: torch.nn.Module, x: torch.Tensor, feature_ids: Sequence[int], batch_size: int = 64) -> np.ndarray:
    """The soft mask of one or several features: their NAMs merged by pixel-wise max, float32 [B, H, W].

    With no features the mask is all zeros (nothing corrupted).
    """
    height, width = x.shape[-2:]
    merged = np.zeros((x.shape[0], height, width), dtype=np.float32)
    for d in dict.fromkeys(int(f) for f in feature_ids):
        np.maximum(merged, nam_for_feature(model, x, d, batch_size=batch_size), out=merged)
    return merged

