"""Linear-probe mode: audit a backbone that has no head for your classes.

The user has only a backbone (an ImageNet ResNet-50, the adversarially robust one, ...). We extract its
pooled features `r(x)` (trunk + pool, exactly what the audit later uses) on the dataset's training split,
fit a multinomial logistic regression on them, and store backbone + new head as an ordinary model folder
(same architecture, `source: linear probe`, the probe's accuracies in `metrics`). From then on it is
audited like any other model, and importance `r·W` refers to the fitted head.

This module sits above both `modelio` (the head, the model folder) and `features` (the extraction), so
neither of those needs the other.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .analysis.metrics import accuracy
from .common import Progress
from .data.table import DatasetError, ImageTable
from .features import extract_features
from .modelio.card import ModelCard, save_model, weights_hash
from .modelio.linear_probe import backbone_with_new_head, fit_linear_head


def _subset(table: ImageTable, mask: np.ndarray) -> ImageTable:
    return ImageTable(class_names=table.class_names, frame=table.frame[mask].copy(),
                      group_columns=table.group_columns, source=table.source)


def _accuracy(features: np.ndarray, labels: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    return accuracy((features @ w.T + b).argmax(1) == labels)


def fit_linear_probe(
    project_or_table,
    backbone_card: ModelCard,
    backbone_checkpoint: str | Path,
    out_folder: str | Path,
    progress: Progress | None = None,
    *,
    class_balanced: bool = False,
    l2: float = 1e-4,
    trust_pickle: bool = False,
    device: str | None = None,
    batch_size: int = 128,
    num_workers: int | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Fit a linear head on the backbone's features of the TRAINING split and save the model folder.

    `project_or_table`: a `Project` (backbone features are cached in its `features/`) or an `ImageTable`.
    Accuracies (percent) on train and, when present, val go into the card's `metrics`. Returns the folder.
    """
    project = None if isinstance(project_or_table, ImageTable) else project_or_table
    table: ImageTable = project_or_table if project is None else project.table
    if "train" not in table.splits:
        raise DatasetError(
            f"{table.source or 'dataset'}: linear-probe mode fits the head on the training split, and this "
            "dataset has none. Add train/ and test/ folders (or a split column), or split it at random first "
            "(spuraudit.modelio.linear_probe.split_for_probe)."
        )
    say = progress or (lambda f, m: None)
    model, card = backbone_with_new_head(backbone_card, backbone_checkpoint, table.class_names, trust_pickle)
    card.name = Path(out_folder).name
    card.options = {"backbone_checkpoint": str(Path(backbone_checkpoint).resolve()),
                    "class_balanced": bool(class_balanced), "l2": float(l2)}
    fit_mask = table.split_mask("train") | table.split_mask("val")
    fit_table = _subset(table, fit_mask)
    say(0.0, f"extracting backbone features of {len(fit_table)} train/val images")
    with tempfile.TemporaryDirectory(prefix="probe-features-") as scratch:
        root = Path(cache_dir) if cache_dir else (project.folder / "features" if project else Path(scratch))
        # The zero head makes the weights hash (and so the cache key) depend on the backbone alone.
        store = extract_features(
            model, fit_table, root, card.input_size, batch_size=batch_size, num_workers=num_workers, device=device,
            progress=lambda f, m: say(0.85 * f, m), model_hash="probe-" + weights_hash(model),
        )
        features = np.asarray(store.features, dtype=np.float32)
    labels = fit_table.labels
    split = fit_table.frame["split"].to_numpy()
    train, val = split == "train", split == "val"
    say(0.86, f"fitting a {table.num_classes}-class linear head on {int(train.sum())} images")
    has_bias = model.head.bias is not None  # MaxViT's head has none
    w, b = fit_linear_head(features[train], labels[train], table.num_classes, class_balanced, l2, fit_bias=has_bias)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(w))
        if has_bias:
            model.head.bias.copy_(torch.from_numpy(b))
    card.metrics = {
        "probe_train_accuracy": _accuracy(features[train], labels[train], w, b),
        "probe_train_images": int(train.sum()),
    }
    if val.any():
        card.metrics["probe_val_accuracy"] = _accuracy(features[val], labels[val], w, b)
        card.metrics["probe_val_images"] = int(val.sum())
    folder = save_model(model, card, out_folder)
    say(1.0, f"linear probe saved: train accuracy {card.metrics['probe_train_accuracy']:.1f} %")
    return folder

