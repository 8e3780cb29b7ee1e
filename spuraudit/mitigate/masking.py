"""MaskTune's masks: XGradCAM heatmaps of the predicted class, thresholded per image, in raw pixel space.

Everything runs on whole batches in the model's own input coordinates ([B, 3, H, W] in [0, 1], the
tensor the model sees): no crops, no resizes of the mask, no image files. A whole training set's
masks are kept as bits, on disk for large sets (`PackedMasks`). XGradCAM itself
comes from `pytorch-grad-cam`; this module only decides which gradients it needs and post-processes
its maps on the batch:

    raw XGradCAM map [B, h, w] -> ReLU -> ÷ per-image max -> bilinear upsampling to [B, H, W]
    -> per-image threshold (rule below) -> mask [B, H, W] -> masked images (pixels above set to 0)

Threshold rules (docs/methods.md §7.2):
  'official'      mean + 2·std of the strictly positive heatmap values (the MaskTune code). When the
                  map is concentrated on a few pixels the threshold can exceed the map's maximum and
                  nothing is masked, hence the masked-share diagnostic.
  'all_pixels'    mean + 2·std over all pixels of the map.
  'top_fraction'  the hottest `fraction` of each image's pixels (never a pixel with zero heat); the
                  default share, a quarter, is about a 3×3-cell blob of a 7×7 heatmap: the coarse
                  map spreads a cue's evidence over such a blob, and a cue at its edge (like a corner
                  square) survives smaller masks.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import XGradCAM

from ..modelio import AuditModel

RULES = ("official", "all_pixels", "top_fraction")
DEFAULT_RULE = "top_fraction"
DEFAULT_FRACTION = 0.25


class _RawXGradCAM(XGradCAM):
    """pytorch-grad-cam's XGradCAM, stopping before its per-image post-processing.

    The library's forward pass, predicted-class targets, backward pass and XGradCAM channel weights are
    used as they are; its per-image min-max scaling and OpenCV resize are replaced by the batched torch
    steps of `heatmaps`, which keep the map in the coordinates of the tensor the model saw.
    """

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        activations = self.activations_and_grads.activations[0].numpy()
        gradients = self.activations_and_grads.gradients[0].numpy()
        cam = self.get_cam_image(input_tensor, self.target_layers[0], targets, activations, gradients, eigen_smooth)
        return [cam[:, None]]

    def aggregate_multi_layers(self, cam_per_target_layer):
        return cam_per_target_layer[0][:, 0]


@contextmanager
def _gradients_at_feature_map_only(model: AuditModel):
    """XGradCAM needs d(score)/d(feature map) only: freeze the parameters and cut the graph at the feature map.

    The class score's gradient with respect to the feature map is the same either way, but backward then
    runs through the pool and head only, not back through the whole backbone, and no parameter gradient
    is computed. The hook is prepended so pytorch-grad-cam's own hooks see the cut tensor.
    """
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    handle = model.target_layer.register_forward_hook(
        lambda module, args, output: output.detach().requires_grad_(True), prepend=True
    )
    try:
        yield
    finally:
        handle.remove()
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


class HeatmapMaker:
    """Batched XGradCAM heatmaps of the predicted class for one model (reuse it across batches).

    Use as a context manager so the hooks are released: `with HeatmapMaker(model) as make: maps = make(x)`.
    """

    def __init__(self, model: AuditModel):
        self.model = model
        self._was_training = model.training
        self._cut = _gradients_at_feature_map_only(model)
        self._cut.__enter__()
        self._cam = _RawXGradCAM(model=model, target_layers=[model.target_layer])  # puts the model in eval mode

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, H, W] in [0, 1] -> (heatmaps float [B, H, W] in [0, 1], predicted class int [B])."""
        device = next(self.model.parameters()).device
        raw = self._cam(input_tensor=images.to(device), targets=None)  # targets=None: the predicted class
        preds = self._cam.outputs.argmax(1).detach().cpu()
        return normalise_and_upsample(torch.from_numpy(np.ascontiguousarray(raw)), images.shape[-2:]), preds

    def close(self) -> None:
        self._cam.activations_and_grads.release()
        self._cut.__exit__(None, None, None)
        self.model.train(self._was_training)

    def __enter__(self) -> "HeatmapMaker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def normalise_and_upsample(cams: torch.Tensor, size) -> torch.Tensor:
    """cams [B, h, w] (any real values) -> ReLU, ÷ per-image max (all-zero maps stay 0), bilinear to [B, H, W]."""
    cams = cams.float().clamp_min(0)
    peak = cams.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    cams = cams / peak
    return F.interpolate(cams[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)


def thresholds(heatmaps: torch.Tensor, rule: str, fraction: float = DEFAULT_FRACTION) -> torch.Tensor:
    """Per-image threshold float [B] for heatmaps [B, H, W]; pixels strictly above it get masked."""
    flat = heatmaps.flatten(1)
    if rule == "official":
        positive = flat > 0
        count = positive.sum(1).clamp_min(1)
        mean = (flat * positive).sum(1) / count
        var = (((flat - mean[:, None]) ** 2) * positive).sum(1) / count  # population std, as NumPy's default
        thr = mean + 2 * var.sqrt()
        # No positive value at all: nothing to mask.
        return torch.where(positive.any(1), thr, torch.full_like(thr, float("inf")))
    if rule == "all_pixels":
        return flat.mean(1) + 2 * flat.std(1, correction=0)
    if rule == "top_fraction":
        if not 0 < fraction < 1:
            raise ValueError(f"top_fraction needs 0 < fraction < 1, got {fraction}.")
        n = flat.shape[1]
        keep = n - max(1, int(round(fraction * n)))  # the value just below the hottest share
        thr = flat.kthvalue(max(keep, 1), dim=1).values
        return thr.clamp_min(0)  # never mask cold (zero-heat) pixels
    raise ValueError(f"unknown threshold rule '{rule}'; choose one of {list(RULES)}.")


def masks_from_heatmaps(heatmaps: torch.Tensor, rule: str, fraction: float = DEFAULT_FRACTION) -> torch.Tensor:
    """bool [B, H, W]: True where the pixel is masked."""
    return heatmaps > thresholds(heatmaps, rule, fraction)[:, None, None]


def apply_masks(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Set masked pixels to 0 in raw [0, 1] pixel space, all channels: [B, 3, H, W] × bool [B, H, W]."""
    return images * (~masks)[:, None].to(images.dtype)


def fill_from_others(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Masked pixels take the same pixels of another image of the batch: [B, 3, H, W] × bool [B, H, W].

    The batch is rolled by a seeded offset of 1..B-1, so no image fills from itself. A cue masked on the
    images of the class it marks comes back, at its place, on images of every class in proportion to how
    often it occurs, so in the masked images it no longer predicts the class: the epoch lowers the head's
    weight on it instead of leaving it untouched (a black hole sends it no gradient at all)."""
    if len(images) < 2:
        return apply_masks(images, masks)
    shift = int(torch.randint(1, len(images), (1,), generator=generator))
    hole = masks[:, None].to(images.dtype)
    return images * (1 - hole) + torch.roll(images, shifts=shift, dims=0) * hole


@dataclass
class MaskBatch:
    """One batch through the masking path: heatmaps [B, H, W] in [0, 1], masks bool [B, H, W],
    masked images [B, 3, H, W] in [0, 1], predicted class [B], masked share per image [B] (fraction)."""

    heatmaps: torch.Tensor
    masks: torch.Tensor
    masked: torch.Tensor
    preds: torch.Tensor
    share: torch.Tensor


def mask_batch(make: HeatmapMaker, images: torch.Tensor, rule: str, fraction: float = DEFAULT_FRACTION) -> MaskBatch:
    heat, preds = make(images)
    masks = masks_from_heatmaps(heat, rule, fraction)
    masked = apply_masks(images, masks.to(images.device))
    return MaskBatch(heat, masks, masked, preds, masks.flatten(1).float().mean(1))


def mask_images(model: AuditModel, images: torch.Tensor, rule: str, fraction: float = DEFAULT_FRACTION,
                batch_size: int = 256, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask a whole set: images [N, 3, H, W] in [0, 1] -> (masked images [N, 3, H, W], masked share [N]).

    Batched through one `HeatmapMaker`; `progress(fraction, message)` after each batch.
    """
    masked = torch.empty_like(images)
    share = torch.empty(len(images))
    with HeatmapMaker(model) as make:
        for start in range(0, len(images), batch_size):
            out = mask_batch(make, images[start:start + batch_size], rule, fraction)
            masked[start:start + batch_size] = out.masked.to(masked.device)
            share[start:start + batch_size] = out.share
            if progress:
                done = min(start + batch_size, len(images))
                progress(done / len(images), f"masked {done}/{len(images)} images")
    return masked, share


class PackedMasks:
    """Masks of a whole training set, bool [N, H, W], held as bits (an eighth of a bool tensor's memory).

    `masks[positions]` -> bool tensor [B, H, W]; `masks.add(positions, new)` ORs new masks in.

    With `path`, the bits live in a `.npy` file (uint8 [N, ceil(H·W/8)], loadable with `np.load`) and only
    the rows asked for are read or written, so memory stays flat whatever N is: 1.28 M images at
    224 × 224 take 7.5 GiB as bits, which belong on disk, not in RAM. Without `path`, in memory.
    """

    def __init__(self, n: int, size, path: str | Path | None = None):
        self.size = (int(size[0]), int(size[1]))
        self._pixels = self.size[0] * self.size[1]
        self._n = int(n)
        self._row = -(-self._pixels // 8)
        self.path = None if path is None else Path(path)
        self._fd = None
        if self.path is None:
            self.bits = np.zeros((self._n, self._row), dtype=np.uint8)
            return
        # Write the .npy header and size the file (sparse: unwritten rows read as zeros), then do plain
        # positioned reads and writes: no mapping, so touched rows never pile up in the process's memory.
        header = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=(self._n, self._row))
        self._offset = header.offset
        del header
        self._fd = os.open(self.path, os.O_RDWR)

    def __len__(self) -> int:
        return self._n

    def _runs(self, positions: np.ndarray):
        """(start, stop, where) for each run of consecutive positions: one read or write per run."""
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        breaks = np.flatnonzero(np.diff(sorted_pos) != 1) + 1
        for part in np.split(np.arange(len(sorted_pos)), breaks):
            if len(part) == 0:
                continue
            first = int(sorted_pos[part[0]])
            yield first, first + len(part), order[part]

    def _read_rows(self, positions: np.ndarray) -> np.ndarray:
        if self._fd is None:
            return self.bits[positions]
        out = np.empty((len(positions), self._row), dtype=np.uint8)
        for start, stop, where in self._runs(positions):
            size = (stop - start) * self._row
            data = os.pread(self._fd, size, self._offset + start * self._row)
            if len(data) != size:
                raise OSError(f"{self.path}: short read ({len(data)} of {size} bytes)")
            out[where] = np.frombuffer(data, dtype=np.uint8).reshape(stop - start, self._row)
        return out

    def _write_rows(self, positions: np.ndarray, rows: np.ndarray) -> None:
        if self._fd is None:
            self.bits[positions] = rows
            return
        for start, stop, where in self._runs(positions):
            os.pwrite(self._fd, np.ascontiguousarray(rows[where]).tobytes(), self._offset + start * self._row)

    def __getitem__(self, positions) -> torch.Tensor:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= self._n):
            raise IndexError(f"mask positions outside 0..{self._n - 1}")
        rows = np.unpackbits(self._read_rows(positions), axis=1, count=self._pixels)
        return torch.from_numpy(rows.reshape(-1, *self.size).astype(bool))

    def add(self, positions, masks: torch.Tensor, chunk: int = 64) -> None:
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        masks = masks.cpu()
        # A few dozen rows at a time: the unpacked temporaries stay a few MB (a 500-image batch at 224 px
        # unpacks to 25 MB per copy), small enough for the allocator to reuse instead of keeping its heap.
        for start in range(0, len(positions), chunk):
            part = positions[start : start + chunk]
            merged = self[part] | masks[start : start + chunk]
            self._write_rows(part, np.packbits(merged.reshape(len(part), -1).numpy(), axis=1))

    def shares(self, chunk: int = 4096) -> np.ndarray:
        """Masked share per image, float [N] (fraction of its pixels)."""
        out = np.empty(len(self), dtype=np.float64)
        for start in range(0, len(self), chunk):
            stop = min(start + chunk, len(self))
            rows = np.unpackbits(self._read_rows(np.arange(start, stop)), axis=1, count=self._pixels)
            out[start:stop] = rows.mean(1)
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "PackedMasks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def share_summary(share: torch.Tensor | np.ndarray) -> dict:
    """Diagnostics of per-image masked shares (fractions): mean/min/max in percent of the image's pixels,
    and the share of images (percent) with nothing masked at all."""
    s = np.asarray(share, dtype=np.float64)
    if not len(s):
        return {"images": 0}
    return {
        "images": int(len(s)),
        "mean_masked_pct": round(100 * float(s.mean()), 2),
        "min_masked_pct": round(100 * float(s.min()), 2),
        "max_masked_pct": round(100 * float(s.max()), 2),
        "nothing_masked_pct": round(100 * float(np.mean(s == 0)), 2),
    }
