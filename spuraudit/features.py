"""The feature store: one batched pass over a dataset, kept on disk and memory-mapped.

For every image it stores the pooled neural features r(x) [N, D], the logits [N, C] and the
predictions [N]. The folder name is a hash of the model's weights, the dataset's content and the
input size, so reopening a project or switching pages recomputes nothing, and a different model
gets its own store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .data.images import ImageTensorDataset
from .data.table import ImageTable
from .modelio import AuditModel, weights_hash
from .training import pick_device

Progress = Callable[[float, str], None]


@dataclass
class FeatureStore:
    """Memory-mapped arrays of one (model, dataset) pair. Shapes: features [N, D], logits [N, C]."""

    path: Path
    features: np.ndarray
    logits: np.ndarray
    preds: np.ndarray
    head_weight: np.ndarray  # W [C, D], so analysis never needs to load the model
    head_bias: np.ndarray  # b [C]
    meta: dict

    @classmethod
    def open(cls, path: str | Path) -> "FeatureStore":
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        return cls(
            path=path,
            features=np.load(path / "features.npy", mmap_mode="r"),
            logits=np.load(path / "logits.npy", mmap_mode="r"),
            preds=np.load(path / "preds.npy", mmap_mode="r"),
            head_weight=np.load(path / "head_weight.npy"),
            head_bias=np.load(path / "head_bias.npy"),
            meta=meta,
        )

    def correct(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(self.preds) == labels


def store_key(model_hash: str, table: ImageTable, input_size) -> str:
    h = hashlib.sha256(f"{model_hash}|{table.content_hash()}|{tuple(input_size)}".encode())
    return h.hexdigest()[:20]


def _loader(table: ImageTable, input_size, batch_size: int, num_workers: int):
    dataset = ImageTensorDataset(table.paths, tuple(input_size))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def run_extraction(
    model: AuditModel,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    n: int,
    device: torch.device,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The core loop: (images [B, 3, H, W] in [0, 1], dataset indices [B]) -> features [n, D], logits [n, C]."""
    feats = np.empty((n, model.num_features), dtype=np.float32)
    logits = np.empty((n, model.num_classes), dtype=np.float32)
    start = time.perf_counter()
    done = 0
    use_amp = device.type == "cuda"
    with torch.inference_mode():
        for x, idx in batches:
            x = x.to(device, non_blocking=True)
            if use_amp:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=use_amp):
                _, f, z = model.forward_all(x)
            rows = idx.numpy()
            if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
                rows = slice(int(rows[0]), int(rows[-1]) + 1)  # a slice copy beats fancy indexing
            feats[rows] = f.float().cpu().numpy()
            logits[rows] = z.float().cpu().numpy()
            done += len(idx)
            if progress:
                rate = done / max(time.perf_counter() - start, 1e-9)
                progress(done / n, f"extracted {done}/{n} images ({rate:.0f} img/s)")
    return feats, logits


def extract_features(
    model: AuditModel,
    table: ImageTable,
    root: str | Path,
    input_size,
    batch_size: int = 128,
    num_workers: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    model_hash: str | None = None,
) -> FeatureStore:
    """Compute (or reuse) the store under `root/<key>/`. Writes are atomic: temp folder + rename."""
    root = Path(root)
    key = store_key(model_hash or weights_hash(model), table, input_size)
    final = root / key
    if (final / "meta.json").is_file():
        if progress:
            progress(1.0, "features already computed (cached)")
        return FeatureStore.open(final)
    root.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    model = model.to(dev).eval()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    n = len(table)
    start = time.perf_counter()
    feats, logits = run_extraction(model, _loader(table, input_size, batch_size, num_workers), n, dev, progress)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
    try:
        np.save(tmp / "features.npy", feats)
        np.save(tmp / "logits.npy", logits)
        np.save(tmp / "preds.npy", logits.argmax(1).astype(np.int64))
        np.save(tmp / "head_weight.npy", model.head.weight.detach().float().cpu().numpy())
        bias = model.head.bias if model.head.bias is not None else torch.zeros(model.num_classes)
        np.save(tmp / "head_bias.npy", bias.detach().float().cpu().numpy())
        meta = {
            "key": key,
            "num_images": n,
            "num_features": int(model.num_features),
            "num_classes": int(model.num_classes),
            "input_size": list(input_size),
            "seconds": round(time.perf_counter() - start, 2),
            "device": str(dev),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "meta.json").is_file():  # another process may have won the race
            raise
    return FeatureStore.open(final)
