"""Display helpers: uint8 conversion, jet overlays, nearest-neighbour upscaling, grids and PNGs."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from spuraudit.explain import image_grid, overlay_heatmap, save_png, to_uint8_image, upscale_for_display


def test_to_uint8_image_layouts():
    chw = torch.zeros(3, 2, 4)
    chw[0] = 1.0
    chw[1] = 0.5
    out = to_uint8_image(chw)
    assert out.shape == (2, 4, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 128, 0]
    np.testing.assert_array_equal(to_uint8_image(chw.permute(1, 2, 0).numpy()), out)  # [H, W, 3]
    grey = to_uint8_image(np.full((5, 6), 0.2))
    assert grey.shape == (5, 6, 3) and (grey == 51).all()
    assert to_uint8_image(np.full((3, 3, 3), 2.0)).max() == 255  # clipped
    raw = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    np.testing.assert_array_equal(to_uint8_image(raw), raw)


def test_overlay_heat_one_is_red_and_zero_is_blue():
    image = np.full((8, 8, 3), 128, dtype=np.uint8)
    hot = overlay_heatmap(image, np.ones((8, 8)), alpha=0.5)
    assert hot.shape == (8, 8, 3) and hot.dtype == np.uint8
    r, g, b = hot[0, 0].astype(int)
    assert r > g + 50 and r > b + 50
    cold = overlay_heatmap(image, np.zeros((8, 8)), alpha=1.0)
    assert cold[0, 0, 2] > cold[0, 0, 0] and cold[0, 0, 2] > cold[0, 0, 1]
    np.testing.assert_array_equal(overlay_heatmap(image, np.ones((8, 8)), alpha=0.0), image)
    assert overlay_heatmap(image, np.ones((2, 2))).shape == (8, 8, 3)  # heat resized to the image


def test_upscale_for_display_nearest():
    digit = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    big = upscale_for_display(digit, 112)
    assert big.shape == (112, 112)
    assert (big[:4, :4] == digit[0, 0]).all() and (big[4:8, :4] == digit[1, 0]).all()
    assert upscale_for_display(np.zeros((30, 50, 3)), 112).shape == (120, 200, 3)  # factor ceil(112/30) = 4
    large = np.zeros((200, 300, 3), np.uint8)
    assert upscale_for_display(large) is large


def test_image_grid_layout():
    tiles = [np.full((4, 5, 3), v, np.uint8) for v in (10, 20, 30)]
    grid = image_grid(tiles, ncols=2, pad=1)
    assert grid.shape == (2 * (4 + 1) + 1, 2 * (5 + 1) + 1, 3) and grid.dtype == np.uint8
    assert grid[1, 1, 0] == 10 and grid[1, 7, 0] == 20 and grid[6, 1, 0] == 30
    assert grid[0, 0, 0] == 255 and grid[6, 7, 0] == 255  # border and the empty cell
    mixed = image_grid([np.zeros((2, 2, 3), np.uint8), np.zeros((4, 3, 3), np.uint8)], ncols=5, pad=0)
    assert mixed.shape == (4, 6, 3)


def test_save_png_roundtrip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    path = save_png(image, tmp_path / "sub" / "a.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), image)
