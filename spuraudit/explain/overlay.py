"""Turning images and heatmaps into displayable uint8 RGB arrays and PNG files.

Display images are uint8 [H, W, 3]; heatmaps are float [H, W] in [0, 1] with 1 = hot (red in the
default jet colormap, as in Salient ImageNet's figures).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch


def to_uint8_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image as uint8 [H, W, 3].

    Args:
        image: float in [0, 1] (values outside are clipped) or uint8, laid out [3, H, W] (always
            assumed for torch tensors), [H, W, 3], [1, H, W], [H, W, 1] or [H, W]; single-channel
            images are repeated to grey RGB.

    Returns:
        uint8 [H, W, 3].
    """
    is_tensor = isinstance(image, torch.Tensor)
    array = image.detach().cpu().numpy() if is_tensor else np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3:
        channels_first = array.shape[0] in (1, 3) and (is_tensor or array.shape[2] not in (1, 3))
        if channels_first:
            array = np.moveaxis(array, 0, -1)
    else:
        raise ValueError(f"expected a [3, H, W], [H, W, 3] or [H, W] image, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {array.shape[2]}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    return np.round(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


@lru_cache(maxsize=16)
def _colormap_table(colormap: str) -> np.ndarray:
    """uint8 [256, 3] lookup table of a matplotlib colormap (matplotlib is imported only here)."""
    import matplotlib

    rgba = matplotlib.colormaps[colormap](np.linspace(0.0, 1.0, 256))
    return np.round(rgba[:, :3] * 255.0).astype(np.uint8)


def colorize(heat: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """float [H, W] in [0, 1] (NaN counts as 0) -> uint8 [H, W, 3] colours of `colormap`."""
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0)
    index = np.round(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.intp)
    return _colormap_table(colormap)[index]


def _resize_heat(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    resized = torch.nn.functional.interpolate(
        torch.as_tensor(heat, dtype=torch.float32)[None, None], size=size, mode="bilinear", align_corners=False
    )
    return resized[0, 0].numpy()


def overlay_heatmap(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """Blend a coloured heatmap over an image: (1 − alpha) · image + alpha · colormap(heat).

    Args:
        image: uint8 [H, W, 3] (anything `to_uint8_image` accepts is converted).
        heat: float [h, w] in [0, 1]; resized bilinearly to H × W when the sizes differ.
        alpha: weight of the heatmap, in [0, 1].
        colormap: a matplotlib colormap name; with "jet", 1 is (dark) red and 0 dark blue.

    Returns:
        uint8 [H, W, 3].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    image = to_uint8_image(image)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be [H, W], got shape {heat.shape}")
    if heat.shape != image.shape[:2]:
        heat = _resize_heat(heat, image.shape[:2])
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * colorize(heat, colormap).astype(np.float64)
    return np.round(blended).astype(np.uint8)


def upscale_for_display(image: np.ndarray, min_side: int = 112) -> np.ndarray:
    """Enlarge a small image by an integer nearest-neighbour factor until its shorter side is ≥ `min_side`.

    Nearest-neighbour keeps tiny images (28 × 28 digits, 32 × 32 CIFAR) crisp instead of blurred;
    images already large enough are returned unchanged. Works on [H, W] and [H, W, C] arrays of any
    dtype.
    """
    image = np.asarray(image)
    shorter = min(image.shape[0], image.shape[1])
    if shorter == 0 or shorter >= min_side:
        return image
    factor = -(-int(min_side) // shorter)  # ceiling division
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def image_grid(
    images: Sequence[np.ndarray] | np.ndarray, ncols: int, pad: int = 2, pad_value: int = 255
) -> np.ndarray:
    """Tile images into one uint8 [rows · (h + pad) + pad, ncols · (w + pad) + pad, 3] picture.

    Args:
        images: N images (anything `to_uint8_image` accepts); sizes may differ, each cell is as
            large as the largest image and smaller images sit in its top-left corner.
        ncols: images per row (rows = ceil(N / ncols)).
        pad: pixels of border between and around cells.
        pad_value: grey level of the border and of empty cells (255 = white).

    Returns:
        uint8 [H, W, 3].
    """
    tiles = [to_uint8_image(img) for img in images]
    if not tiles:
        raise ValueError("image_grid needs at least one image")
    if ncols < 1 or pad < 0:
        raise ValueError(f"ncols must be >= 1 and pad >= 0, got {ncols} and {pad}")
    ncols = min(ncols, len(tiles))
    nrows = -(-len(tiles) // ncols)
    cell_h = max(t.shape[0] for t in tiles)
    cell_w = max(t.shape[1] for t in tiles)
    grid = np.full((nrows * (cell_h + pad) + pad, ncols * (cell_w + pad) + pad, 3), pad_value, dtype=np.uint8)
    for i, tile in enumerate(tiles):  # a handful of tiles per grid, each copied as one block
        top = pad + (i // ncols) * (cell_h + pad)
        left = pad + (i % ncols) * (cell_w + pad)
        grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return grid


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an image (anything `to_uint8_image` accepts) as PNG, creating parent folders; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8_image(image)).save(path, format="PNG")
    return path
