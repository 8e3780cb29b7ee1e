"""Plain supervised training and evaluation over image tables (the demo's ERM model, fine-tuning)."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
from torch import nn

from .data.images import ImageTensorDataset


DEVICE_ENV = "SPURAUDIT_DEVICE"  # the default device of this process ("cpu", "cuda", "cuda:1"); set by `--device`


def pick_device(device: str | None = None) -> torch.device:
    """`device`, else $SPURAUDIT_DEVICE, else CUDA when there is one. A bare "cuda" in a torchrun process
    means that process's own GPU (LOCAL_RANK), so every rank drives a different one."""
    dev = torch.device(device or os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def loader_workers() -> int:
    """Decoding processes for a training or masking loader: none without a GPU (the CPU computes, and
    extra processes only compete with it), up to 8 with one, so decoding keeps up with the device."""
    if not torch.cuda.is_available():
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def image_loader(paths: list[str], size: tuple[int, int], batch_size: int, order=None, num_workers: int = 0,
                 device: torch.device | None = None) -> torch.utils.data.DataLoader:
    """Batches (images [B, 3, H, W] in [0, 1], positions [B]) of `paths` in `order` (default: as listed).

    On a GPU the batches come in pinned memory, so `.to(device, non_blocking=True)` overlaps the copy
    with the work already queued."""
    on_gpu = device is not None and device.type == "cuda"
    return torch.utils.data.DataLoader(
        ImageTensorDataset(paths, tuple(size)), batch_size=batch_size,
        sampler=list(order) if order is not None else None, num_workers=num_workers, pin_memory=on_gpu,
        **({"prefetch_factor": 4} if num_workers else {}))


def load_tensors(paths: list[str], size: tuple[int, int], num_workers: int = 0) -> torch.Tensor:
    """Decode a (small) set of images into one tensor [N, 3, H, W] in [0, 1]."""
    loader = torch.utils.data.DataLoader(ImageTensorDataset(paths, size), batch_size=256, num_workers=num_workers)
    return torch.cat([x for x, _ in loader]) if len(paths) else torch.empty(0, 3, *size)


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[float]:
    """Train `model` (images in [0, 1] -> logits) with cross-entropy; returns the mean loss per epoch.

    images: float [N, 3, H, W] held in memory (the demo and the tests are small).
    """
    dev = pick_device(device)
    model.to(dev).train()
    gen = torch.Generator().manual_seed(seed)
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = len(images)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    history = []
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x, y = images[idx].to(dev), labels[idx].to(dev)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            if progress:
                done = (epoch * steps_per_epoch + step + 1) / (epochs * steps_per_epoch)
                progress(done, f"epoch {epoch + 1}/{epochs}, loss {loss.item():.3f}")
        history.append(total / n)
    model.eval()
    return history


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: str | None = None) -> np.ndarray:
    """Predicted class per image: int [N]."""
    dev = pick_device(device)
    model.to(dev).eval()
    preds = [model(images[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(preds).numpy() if preds else np.empty(0, dtype=np.int64)
