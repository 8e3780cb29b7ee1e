"""Feature stores of head-only models, derived from the parent's store instead of recomputed.

A head-only method leaves the backbone untouched, so the new model's pooled features are the
parent's, bit for bit; only logits, predictions and the head differ. Re-running the backbone over
the whole dataset (minutes to hours at ImageNet scale) would recompute what is already on disk, so
the new store reuses the parent's features file (a hard link where the file system allows it) and
recomputes the rest from the new head. It is written under the same content key the project
looks up, atomically, so `Project.feature_store(new_folder)` finds it like any extracted store.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_dir
from ..features import FeatureStore, store_key
from ..featurestats import build_stats
from ..modelio import AuditModel, weights_hash
from ..project import Project

_CHUNK = 65536  # rows per matrix product: bounded memory at any dataset size


def head_logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """features [N, D] (may be memory-mapped) @ W[C, D].T + b[C] -> logits float32 [N, C]."""
    out = np.empty((len(features), weight.shape[0]), dtype=np.float32)
    w = weight.astype(np.float32).T
    for start in range(0, len(features), _CHUNK):
        block = np.asarray(features[start:start + _CHUNK], dtype=np.float32)
        out[start:start + _CHUNK] = block @ w + bias.astype(np.float32)
    return out


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # the features are read-only memory maps: sharing the file is safe
    except OSError:
        shutil.copyfile(source, target)


def derive_head_store(project: Project, parent: FeatureStore, model: AuditModel, input_size) -> FeatureStore:
    """The feature store of `model`, whose backbone is the parent store's, under its own content key."""
    root = project.folder / "features"
    key = store_key(weights_hash(model), project.table, input_size)
    final = root / key
    if (final / "meta.json").is_file():
        return FeatureStore.open(final)
    weight = model.head.weight.detach().float().cpu().numpy()
    bias_t = model.head.bias if model.head.bias is not None else torch.zeros(model.num_classes)
    bias = bias_t.detach().float().cpu().numpy()
    logits = head_logits(parent.features, weight, bias)
    root.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_dir(final) as tmp:
            _write_head_store(tmp, parent, key, weight, bias, logits)
            # the per-class statistics now, while the store is written, not on its first open
            build_stats(FeatureStore.open(tmp), project.table)
    except FileExistsError:
        if not (final / "meta.json").is_file():  # a folder that is not a finished store is in the way
            raise
    return FeatureStore.open(final)


def _write_head_store(tmp: Path, parent: FeatureStore, key: str, weight: np.ndarray, bias: np.ndarray,
                      logits: np.ndarray) -> None:
    """Fill a store folder: the parent's features (shared), the new head and what it predicts."""
    _link_or_copy(parent.path / "features.npy", tmp / "features.npy")
    np.save(tmp / "logits.npy", logits)
    np.save(tmp / "preds.npy", logits.argmax(1).astype(np.int64))
    np.save(tmp / "head_weight.npy", weight)
    np.save(tmp / "head_bias.npy", bias)
    meta = {
        **{k: v for k, v in parent.meta.items() if k not in ("key", "seconds")},
        "key": key,
        "num_classes": int(weight.shape[0]),
        "derived_from": parent.path.name,
        "note": "head-only model: features shared with the parent store, logits from the new head",
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
