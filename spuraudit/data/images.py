"""Decoding images safely and turning them into model inputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

# Refuse decompression bombs (a tiny file that decodes to gigapixels) as errors, not warnings.
Image.MAX_IMAGE_PIXELS = 64_000_000
warnings.simplefilter("error", Image.DecompressionBombWarning)


def is_image_file(path: str | Path) -> bool:
    """An image by its extension; dotfiles (`.hidden.jpg`, macOS `._x.jpg`) are not."""
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB in the orientation a viewer shows (EXIF rotation applied), 16-bit and float images scaled to 8 bits.

    PIL's own `convert("RGB")` clips 16-bit values at 255, which turns most 16-bit photos white.
    """
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        in_16_bits = arr.size and arr.min() >= 0 and arr.max() <= 65535
        if im.mode.startswith("I;16") or (in_16_bits and arr.max() > 255):
            arr = arr / 257.0  # 0..65535 -> 0..255
        elif arr.size and (arr.max() > 255 or arr.min() < 0):
            low, high = float(arr.min()), float(arr.max())  # 32-bit data of unknown range: stretch it
            arr = (arr - low) * (255.0 / (high - low)) if high > low else np.zeros_like(arr)
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    return im.convert("RGB")


def check_image(path: str | Path) -> str | None:
    """Return None when the file decodes as an image, else the reason it does not."""
    try:
        with Image.open(path) as im:
            im.load()
        return None
    except Image.DecompressionBombError as exc:
        return f"refused: {exc}"
    except Image.DecompressionBombWarning as exc:
        return f"refused: {exc}"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"cannot decode: {exc}"


def load_rgb(path: str | Path, size: tuple[int, int] | None = None) -> Image.Image:
    """Open as RGB, resized to `size` = (H, W) when given (the whole image, no crop)."""
    with Image.open(path) as im:
        im = to_rgb(im)
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        return im


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor [3, H, W] in [0, 1]."""
    arr = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Object mask as bool [H, W] at the model's input size (non-zero = object)."""
    with Image.open(path) as im:
        im = im.convert("L").resize((size[1], size[0]), Image.NEAREST)
        return np.asarray(im) > 127


class ImageTensorDataset(torch.utils.data.Dataset):
    """Paths -> (image tensor [3, H, W] in [0, 1], index)."""

    def __init__(self, paths: list[str], size: tuple[int, int]):
        self.paths = list(paths)
        self.size = tuple(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return to_tensor(load_rgb(self.paths[i], self.size)), i
