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
    finish_batchnorm: bool = False,
) -> list[float]:
    """Train `model` (images in [0, 1] -> logits) with cross-entropy; returns the mean loss per epoch.

    images: float [N, 3, H, W] held in memory (the demo and the tests are small).
    finish_batchnorm: re-estimate the batch-norm statistics on the training images at the end. A short run
    at a constant rate ends with running statistics that lag behind the last weights (each step moves the
    weights, the running mean keeps 90 % of its past); a model trained to the end of a decaying schedule
    does not have that lag, and this gives a short run the same finish.
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
    if finish_batchnorm:
        recalibrate_batchnorm(model, (images[i:i + 256] for i in range(0, n, 256)), dev)
    model.eval()
    return history


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: str | None = None) -> np.ndarray:
    """Predicted class per image: int [N]."""
    dev = pick_device(device)
    model.to(dev).eval()
    preds = [model(images[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(preds).numpy() if preds else np.empty(0, dtype=np.int64)


def recalibrate_batchnorm(model: nn.Module, batches, device: torch.device | None = None) -> int:
    """Re-estimate every batch-norm layer's running mean and variance from `batches` (images [B, 3, H, W] in
    [0, 1]), weights untouched; returns the number of images seen (0 when the model has no batch norm).

    The statistics become the plain average over all the images (momentum None), not a running blend with the
    old ones. Used after training on images unlike the test images (MaskTune's masked epoch): the weights keep
    what that epoch taught, the normalisation goes back to whole images like the ones the model will see.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    dev = device or next(model.parameters()).device
    momenta = [m.momentum for m in layers]
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    seen = 0
    try:
        with torch.no_grad():
            for x in batches:
                model(x.to(dev, non_blocking=True))
                seen += len(x)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    return seen
