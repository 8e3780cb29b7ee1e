"""Run by tests/test_distributed.py, under torchrun or alone: MaskTune's fine-tuning epoch on a tiny
model and tiny images, then the tuned weights written by rank 0 to the file named by argv[2]."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from spuraudit import distributed
from spuraudit.mitigate.masking import PackedMasks
from spuraudit.mitigate.masktune import MaskTune

SIZE = (16, 16)
N = 37  # not a multiple of the batch: the last batch is short and split unevenly


def tiny_images(folder: Path) -> list[str]:
    """N small PNGs, the same on every call (a seeded generator)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(N):
        path = folder / f"{i:03d}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def tiny_model() -> nn.Module:
    """No batch statistics (GroupNorm), so slices of a batch see what the whole batch sees."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 3))


def tune(folder: Path, optimizer: str = "adam") -> dict[str, torch.Tensor]:
    device = distributed.setup("cpu")
    paths = tiny_images(folder / "images")
    labels = torch.as_tensor(np.arange(N) % 3)
    model = tiny_model()
    # Black holes: with 'others' each process would take donors from its own share of the batch, not the whole.
    options = {"optimizer": optimizer, "lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 8,
               "fill": "zero"}
    with PackedMasks(N, SIZE, folder / f"masks-{distributed.rank()}.npy") as masks:
        rng = np.random.default_rng(1)
        masks.add(np.arange(N), torch.as_tensor(rng.random((N, *SIZE)) < 0.25))
        MaskTune._tune_epoch(model, paths, SIZE, masks, labels, options, torch.Generator().manual_seed(0), device,
                             lambda f, m: None)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


if __name__ == "__main__":
    state = tune(Path(sys.argv[1]), sys.argv[3] if len(sys.argv) > 3 else "adam")
    if distributed.is_main():
        torch.save(state, sys.argv[2])
    distributed.finish()
