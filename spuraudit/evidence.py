"""The evidence shown for one (class, feature) pair: top images, NAMs, CAMs, attacks, bottom images.

Runs the model on a handful of images only (the pair's top-k), never on the whole dataset. The
feature attack, the slow part, is cached on disk beside the project.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import explain
from .audit import Audit
from .data.images import load_mask, load_rgb, to_tensor
from .modelio import AuditModel

DISPLAY_MIN_SIDE = 112


@dataclass
class PairEvidence:
    class_index: int
    feature: int
    top: np.ndarray  # dataset indices of the top images
    bottom: np.ndarray
    top_activation: np.ndarray  # r_d of each top image
    bottom_activation: np.ndarray
    images: list[np.ndarray]  # uint8 [H, W, 3] at display size
    nams: list[np.ndarray]  # overlays
    nam_maps: np.ndarray  # raw NAMs [k, H, W] at model input size, in [0, 1]
    bottom_images: list[np.ndarray]


def load_batch(paths: list[str], size) -> torch.Tensor:
    """[k, 3, H, W] in [0, 1] at the model's input size."""
    if not paths:
        return torch.empty(0, 3, *size)
    return torch.stack([to_tensor(load_rgb(p, tuple(size))) for p in paths])


def _display(x: torch.Tensor) -> list[np.ndarray]:
    return [explain.upscale_for_display(explain.to_uint8_image(img), DISPLAY_MIN_SIDE) for img in x]


def _overlays(x: torch.Tensor, maps: np.ndarray) -> list[np.ndarray]:
    out = []
    for img, heat in zip(x, maps):
        overlay = explain.overlay_heatmap(explain.to_uint8_image(img), heat)
        out.append(explain.upscale_for_display(overlay, DISPLAY_MIN_SIDE))
    return out


def pair_evidence(audit: Audit, model: AuditModel, input_size, class_index: int, feature: int, k: int = 8,
                  split: str | None = None, mode: str = "correct") -> PairEvidence:
    top = audit.feature_images(class_index, feature, k, split, mode, largest=True)
    bottom = audit.feature_images(class_index, feature, k, split, mode, largest=False)
    table = audit.table
    x_top = load_batch([table.path(int(i)) for i in top], input_size)
    x_bottom = load_batch([table.path(int(i)) for i in bottom], input_size)
    model.eval()
    nam_maps = (explain.nam_for_feature(model, x_top, feature) if len(top)
                else np.zeros((0, *input_size), dtype=np.float32))
    # only the chosen rows of the column (a whole column reads the whole store at ImageNet size)
    top_acts = np.asarray(audit.features[top, int(feature)]) if len(top) else np.zeros(0, np.float16)
    bottom_acts = np.asarray(audit.features[bottom, int(feature)]) if len(bottom) else np.zeros(0, np.float16)
    return PairEvidence(
        class_index=class_index,
        feature=feature,
        top=top,
        bottom=bottom,
        top_activation=top_acts,
        bottom_activation=bottom_acts,
        images=_display(x_top),
        nams=_overlays(x_top, nam_maps),
        nam_maps=np.asarray(nam_maps),
        bottom_images=_display(x_bottom),
    )


def cam_overlays(audit: Audit, model: AuditModel, input_size, indices: np.ndarray, class_index: int,
                 method: str = "gradcam") -> list[np.ndarray]:
    """The class's CAM on the given images, as display overlays."""
    x = load_batch([audit.table.path(int(i)) for i in indices], input_size)
    if not len(x):
        return []
    maps = explain.class_activation_maps(model, x, [class_index] * len(x), method=method)
    return _overlays(x, maps)


def attack_images(audit: Audit, model: AuditModel, input_size, indices: np.ndarray, feature: int,
                  steps: int = 100, cache_dir: Path | None = None) -> list[np.ndarray]:
    """Feature attacks on the given images (cached on disk as .npy by store, images and feature)."""
    key = hashlib.sha1(f"{audit.store.meta['key']}|{feature}|{steps}|{list(map(int, indices))}".encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"attack-{key}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        adv = np.load(cache)
    else:
        x = load_batch([audit.table.path(int(i)) for i in indices], input_size)
        if not len(x):
            return []
        result = explain.feature_attack(model, x, feature, steps=steps)
        adv_t = result[0] if isinstance(result, tuple) else getattr(result, "images", result)
        adv = adv_t.detach().cpu().numpy().astype(np.float32)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, adv)
    return _display(torch.from_numpy(adv))


def object_masks(audit: Audit, indices: np.ndarray, input_size) -> np.ndarray | None:
    """Object masks [k, H, W] bool for the given images, when the dataset has them."""
    if not audit.table.has_masks:
        return None
    col = audit.table.frame["mask_path"]
    return np.stack([load_mask(col.iloc[i], input_size) for i in indices])


def render_pair_files(audit: Audit, class_index: int, feature: int, out: Path, k: int = 8,
                      split: str | None = None, mode: str = "correct", cam_method: str = "gradcam",
                      attack: bool = True) -> list[Path]:
    """Write the pair's evidence as PNG grids (one row each) into `out`; returns the files."""
    model, card = audit.project.load_model(None)
    ev = pair_evidence(audit, model, card.input_size, class_index, feature, k, split, mode)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"class{class_index}_feature{feature}"
    panels = {"top": ev.images, "nam": ev.nams,
              f"cam-{cam_method}": cam_overlays(audit, model, card.input_size, ev.top, class_index, cam_method),
              "bottom": ev.bottom_images}
    if attack:
        panels["attack"] = attack_images(audit, model, card.input_size, ev.top, feature,
                                         cache_dir=audit.project.cache_dir)
    files = []
    for name, images in panels.items():
        if not images:
            continue
        path = out / f"{stem}_{name}.png"
        explain.save_png(explain.image_grid(images, ncols=len(images), pad=2), path)
        files.append(path)
    return files
