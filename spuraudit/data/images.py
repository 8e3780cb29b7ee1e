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


# ---- batched decoding on the model's device -----------------------------------------------------
# Decoding JPEGs is what limits a GPU extraction: a ResNet-50 forward takes a fraction of a
# millisecond per image, libjpeg several. So the loader's workers only read the file and check its
# header, and the main process decodes a whole batch at once with `torchvision.io.decode_jpeg` on the
# device (nvJPEG on CUDA) and resizes it there. Anything that is not a plain JPEG (PNG, CMYK, an EXIF
# rotation, a header that lies) is decoded by PIL in the worker exactly as `load_rgb` does.

_JPEG_MODES = ("RGB", "L")


def _plain_jpeg(path: str) -> bool:
    """A baseline RGB/grey JPEG without rotation that the batch decoder handles; header read only.

    Anything doubtful goes to PIL's path, which refuses bad files with its usual errors."""
    try:
        with Image.open(path) as im:
            if im.format != "JPEG" or im.mode not in _JPEG_MODES:
                return False
            if im.width * im.height > Image.MAX_IMAGE_PIXELS:
                return False
            return im.getexif().get(0x0112, 1) == 1  # orientation tag: 1 = as stored
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning):
        return False


class EncodedImageDataset(torch.utils.data.Dataset):
    """Paths -> (JPEG bytes uint8 [L], index) for plain JPEGs, (image float [3, H, W], index) otherwise."""

    def __init__(self, paths: list[str], size: tuple[int, int]):
        self.paths = list(paths)
        self.size = tuple(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        if _plain_jpeg(path):
            return torch.from_numpy(np.fromfile(path, dtype=np.uint8)), i
        return to_tensor(load_rgb(path, self.size)), i


def collate_encoded(items):
    """Keeps the per-image tensors apart (JPEG byte strings have different lengths)."""
    return [t for t, _ in items], torch.as_tensor([i for _, i in items], dtype=torch.int64)


def _resize_uint8(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [3, h, w] -> float [3, H, W] in [0, 1]: antialiased bilinear like PIL's, rounded to 8 bits like it."""
    x = img.unsqueeze(0).float()
    if tuple(img.shape[1:]) != tuple(size):
        x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).div_(255.0)[0]


def decode_batch(items: list[torch.Tensor], size: tuple[int, int], device: torch.device,
                 paths: list[str] | None = None) -> torch.Tensor:
    """A batch from `EncodedImageDataset` -> float [B, 3, H, W] in [0, 1] on `device`.

    JPEG byte strings are decoded together on `device`; a batch the decoder rejects is decoded one
    file at a time, and a file that still fails raises an error naming it (when `paths` is given).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    out = torch.empty((len(items), 3, *size), device=device)
    jpeg = [k for k, t in enumerate(items) if t.dim() == 1]
    for k, t in enumerate(items):
        if t.dim() != 1:
            out[k] = t.to(device, non_blocking=True)
    if not jpeg:
        return out
    data = [items[k] for k in jpeg]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision points to torchcodec; same decoder
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = []
            for k, raw in zip(jpeg, data):
                try:
                    decoded.append(decode_jpeg(raw, mode=ImageReadMode.RGB, device=device))
                except RuntimeError as exc:
                    name = paths[k] if paths is not None else f"item {k} of the batch"
                    reason = str(exc).split(", ")[-1]
                    raise ValueError(f"{name}: cannot decode this JPEG ({reason}); fix or remove the file") from exc
    for k, img in zip(jpeg, decoded):
        out[k] = _resize_uint8(img, size)
    return out
