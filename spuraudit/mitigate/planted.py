"""Planted cues: a known spurious cue drawn onto images, with the mask of its pixels.

A mitigation can be checked only against a cue whose every pixel is known: the cue-variant benchmark
and the tests plant one (a small square, a bar, a dot pattern, a texture patch or a background tint,
in any corner and colour) on a chosen share of each class's images, then ask how much of it MaskTune
masked and whether a method stopped relying on it.

Images are uint8 [N, H, W, 3]; a cue's pixels are bool [N, H, W].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("square", "bar", "dots", "texture", "tint")
POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class CueSpec:
    """shape: one of SHAPES; size: side in pixels (2-6 for the patches; ignored by 'tint');
    colour: RGB 0-255; position: one of POSITIONS; margin: pixels between the cue and the border;
    tint: how far a 'tint' pulls the background (dark pixels) towards the colour, 0-1."""

    shape: str = "square"
    size: int = 4
    colour: tuple[int, int, int] = (255, 0, 0)
    position: str = "top_left"
    margin: int = 1
    tint: float = 0.25

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown cue shape '{self.shape}'; choose one of {list(SHAPES)}")
        if self.position not in POSITIONS:
            raise ValueError(f"unknown cue position '{self.position}'; choose one of {list(POSITIONS)}")
        if not 1 <= self.size <= 16:
            raise ValueError(f"cue size must be 1-16 pixels, got {self.size}")

    @property
    def label(self) -> str:
        colour = "#%02x%02x%02x" % tuple(self.colour)
        if self.shape == "tint":
            return f"tint {colour} {int(100 * self.tint)}%"
        return f"{self.shape} {self.size}px {colour} {self.position}"


def cue_pattern(spec: CueSpec, height: int, width: int) -> np.ndarray:
    """bool [H, W]: where a patch cue sits (for 'tint', an empty pattern: the tint depends on the image)."""
    out = np.zeros((height, width), dtype=bool)
    if spec.shape == "tint":
        return out
    s = spec.size
    if spec.shape == "square":
        patch = np.ones((s, s), bool)
    elif spec.shape == "bar":  # a thin horizontal bar, three times as long as the size
        patch = np.ones((max(1, s // 2), 3 * s), bool)
    elif spec.shape == "dots":  # s × s dots on a 2-pixel grid (a 2×2 grid of dots at size 2-3)
        patch = np.zeros((2 * s - 1, 2 * s - 1), bool)
        patch[::2, ::2] = True
    else:  # texture: a checkerboard of 2·s × 2·s pixels
        yy, xx = np.mgrid[: 2 * s, : 2 * s]
        patch = (yy + xx) % 2 == 0
    ph, pw = min(patch.shape[0], height), min(patch.shape[1], width)
    patch = patch[:ph, :pw]
    m = spec.margin
    top = m if spec.position.startswith("top") else height - ph - m
    left = m if spec.position.endswith("left") else width - pw - m
    out[top:top + ph, left:left + pw] = patch
    return out


def plant(images: np.ndarray, spec: CueSpec, where: np.ndarray, dark_below: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Draw the cue on images[where]; returns (a copy of the images, bool [N, H, W] the cue's pixels).

    images: uint8 [N, H, W, 3]; where: bool [N]. A tint pulls every dark pixel (all channels below
    `dark_below`) of the chosen images towards the colour; those pixels are its cue pixels."""
    out = np.array(images, dtype=np.uint8, copy=True)
    n, h, w = out.shape[:3]
    cue = np.zeros((n, h, w), dtype=bool)
    where = np.asarray(where, dtype=bool)
    colour = np.asarray(spec.colour, dtype=np.float64)
    if spec.shape == "tint":
        dark = (out.max(axis=-1) < dark_below) & where[:, None, None]
        mixed = (1 - spec.tint) * out.astype(np.float64) + spec.tint * colour
        out = np.where(dark[..., None], mixed.round(), out).astype(np.uint8)
        return out, dark
    pattern = cue_pattern(spec, h, w)
    cue[where] = pattern
    out[cue] = np.asarray(spec.colour, dtype=np.uint8)
    return out, cue


def cue_flags(labels: np.ndarray, strength: float, rng: np.random.Generator, favoured: int = 0) -> np.ndarray:
    """bool [N]: which images carry the cue: `strength` of class `favoured`'s images and 1 − strength of
    every other class's, chosen at random."""
    labels = np.asarray(labels)
    flags = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        share = strength if c == favoured else 1.0 - strength
        flags[rng.choice(members, size=int(round(share * len(members))), replace=False)] = True
    return flags


# ---- a whole project around a planted cue (tests and the cue-variant benchmark) ------------------

CUE_COLUMN = "planted_cue"


def write_cue_project(home, images: np.ndarray, labels: np.ndarray, split: np.ndarray, cue: np.ndarray,
                      class_names: list[str], seed: int = 0, epochs: int = 3, name: str = "cue",
                      pixels: np.ndarray | None = None, finish_batchnorm: bool = False):
    """PNG files, a table with the cue as group column, an ERM DigitNet trained on the training split,
    a project and its feature store. Returns the project.

    images uint8 [N, 28, 28, 3] (the cue already drawn); labels int [N]; split str [N]; cue bool [N];
    pixels: bool [N, 28, 28] the cue's pixels, written as a `cue_mask_path` PNG column when given.
    finish_batchnorm: re-estimate the ERM model's batch-norm statistics after training (`train_classifier`)."""
    from pathlib import Path

    import pandas as pd
    import torch
    from PIL import Image

    from ..data.table import ImageTable
    from ..modelio import ModelCard, build_audit_model, save_model
    from ..project import Project
    from ..training import train_classifier

    home = Path(home)
    folder = home / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, img in enumerate(images):
        path = folder / f"{split[i]}_{i:05d}.png"
        Image.fromarray(img).save(path, compress_level=1)
        cue_path = ""
        if pixels is not None and pixels[i].any():  # the cue's own pixels, for MaskTune's coverage figures
            cue_path = str(folder / f"{split[i]}_{i:05d}_cue.png")
            Image.fromarray((pixels[i] * 255).astype(np.uint8)).save(cue_path, compress_level=1)
        rows.append({"path": str(path), "label": int(labels[i]), "split": str(split[i]), CUE_COLUMN: int(cue[i]),
                     "cue_mask_path": cue_path})
    table = ImageTable(class_names=list(class_names), frame=pd.DataFrame(rows), group_columns=[CUE_COLUMN],
                       source=f"planted cue, seed {seed}")
    card = ModelCard(name="erm", architecture="spuraudit:digitnet", class_names=list(class_names),
                     input_size=list(images.shape[1:3]), mean=[0.5] * 3, std=[0.5] * 3, source="trained here")
    torch.manual_seed(seed)
    model = build_audit_model(card)
    train = split == "train"
    x = torch.from_numpy(images[train]).permute(0, 3, 1, 2).float().div(255.0)
    train_classifier(model, x, torch.as_tensor(labels[train]), epochs=epochs, seed=seed,
                     finish_batchnorm=finish_batchnorm)
    model_folder = save_model(model, card, home / "models" / "erm")
    project = Project.create(name, table, model_folder, base=home)
    project.extract(num_workers=0)
    return project


def label_planted_cue(project, cue: np.ndarray, class_index: int = 0, k: int = 5, split: str = "val") -> int:
    """Label the planted cue's feature spurious for `class_index`, as a reviewer would find it: among the
    class's top-k features, the one whose activation best separates images with and without the cue."""
    from ..analysis import auroc
    from ..audit import Audit

    audit = Audit(project, project.feature_store(), spurious={})
    mask = audit.split_mask(split)
    top = audit.top_features(class_index, k=k, split=split)["feature"]
    scores = {int(d): auroc(np.asarray(audit.features[mask, d]), np.asarray(cue)[mask]) for d in top}
    feature = max(scores, key=scores.get)
    project.labels().add_vote(class_index, feature, "background", annotator="planted-cue")
    return feature
