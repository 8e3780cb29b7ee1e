"""Linear-probe mode: audit a backbone that has no head for your classes.

The user has only a backbone (an ImageNet ResNet-50, the adversarially robust one, ...). We extract its
pooled features `r(x)` (trunk + pool, exactly what the audit later uses) on the dataset's training split,
fit a multinomial logistic regression on them, and store backbone + new head as an ordinary model folder
(same architecture, `source: linear probe`, the probe's accuracies in `metrics`). From then on it is
audited like any other model, and importance `r·W` refers to the fitted head.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.table import DatasetError, ImageTable
from .card import ModelCard, build_audit_model, save_model, weights_hash
from .checkpoint import CheckpointError, read_checkpoint
from .inspection import head_weight_key
from .registry import get_architecture

from ..common import Progress  # noqa: F401  (re-exported for callers)


def fit_linear_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    class_balanced: bool = False,
    l2: float = 1e-4,
    max_iter: int = 300,
    fit_bias: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by L-BFGS. features [N, D], labels [N] -> (W [C, D], b [C]).

    Features are standardised for the fit (L-BFGS converges far faster on unit-scale inputs) and the
    scaling is folded back into W and b, so the head applies to the raw features. `l2` penalises the
    standardised weights; `class_balanced` weights each class's loss by N / (C · n_c). With
    `fit_bias=False` the returned b is all zeros (for heads without a bias), and the features are scaled
    but not centred, since centring would need an intercept to undo.
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if len(x) == 0:
        raise DatasetError("linear probe: no training images to fit the head on.")
    mean = x.mean(0) if fit_bias else torch.zeros(x.shape[1])
    scale = x.std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    counts = torch.bincount(y, minlength=num_classes).float()
    weight = None
    if class_balanced:
        weight = torch.where(counts > 0, len(y) / (num_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    linear = nn.Linear(x.shape[1], num_classes, bias=fit_bias)
    nn.init.zeros_(linear.weight)
    if fit_bias:
        nn.init.zeros_(linear.bias)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-9, history_size=20)

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(linear(z), y) + 0.5 * l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        w = linear.weight / scale  # W z = (W / s)(x - m)
        b = (linear.bias if fit_bias else torch.zeros(num_classes)) - w @ mean
    return w.numpy(), b.numpy()


def _subset(table: ImageTable, mask: np.ndarray) -> ImageTable:
    return ImageTable(class_names=table.class_names, frame=table.frame[mask].copy(),
                      group_columns=table.group_columns, source=table.source)


def split_for_probe(table: ImageTable, train_fraction: float = 0.5, seed: int = 0) -> ImageTable:
    """A copy of `table` whose images without a split get a stratified random train/test split.

    A probe fitted on the images it is then audited on would flatter itself; use this when the dataset
    has no train/ folder or split column.
    """
    frame = table.frame.copy()
    rng = np.random.default_rng(seed)
    unsplit = (frame["split"] == "all").to_numpy()
    for label in np.unique(frame["label"]):
        idx = np.flatnonzero(unsplit & (frame["label"] == label).to_numpy())
        rng.shuffle(idx)
        n_train = int(round(train_fraction * len(idx)))
        frame.loc[frame.index[idx[:n_train]], "split"] = "train"
        frame.loc[frame.index[idx[n_train:]], "split"] = "test"
    return ImageTable(class_names=table.class_names, frame=frame, group_columns=table.group_columns,
                      skipped=table.skipped, source=table.source)


def backbone_with_new_head(backbone_card: ModelCard, checkpoint: str | Path, class_names: list[str],
                           trust_pickle: bool = False) -> tuple[nn.Module, ModelCard]:
    """(AuditModel of the backbone with a zero head for `class_names`, card for it).

    The checkpoint's own head (any number of classes) is dropped, and a checkpoint without any head loads
    too; every other tensor must fit the architecture exactly.
    """
    if backbone_card.architecture == "torchscript":
        raise CheckpointError(
            "linear-probe mode needs a named architecture; a TorchScript file's head cannot be replaced. "
            "Export the backbone's state dict and choose its architecture."
        )
    arch = get_architecture(backbone_card.architecture)
    ckpt = read_checkpoint(checkpoint, trust_pickle=trust_pickle)
    state = arch.prepare_state(ckpt.state_dict) if arch.prepare_state else dict(ckpt.state_dict)
    n = len(class_names)
    net = arch.build(n)
    key = head_weight_key(arch, net)
    prefix = key[: -len("weight")] if key else None
    fresh = net.state_dict()
    if prefix is not None:
        state = {k: v for k, v in state.items() if not (k.startswith(prefix) and k[len(prefix):] in ("weight", "bias"))}
        state.update({k: torch.zeros_like(v) for k, v in fresh.items()
                      if k.startswith(prefix) and k[len(prefix):] in ("weight", "bias")})
    card = ModelCard(
        name=backbone_card.name,
        architecture=backbone_card.architecture,
        class_names=list(class_names),
        input_size=list(backbone_card.input_size),
        mean=list(ckpt.mean if ckpt.mean is not None else backbone_card.mean),
        std=list(ckpt.std if ckpt.std is not None else backbone_card.std),
        source="linear probe",
        parent=str(Path(checkpoint).resolve()),
        notes=list(backbone_card.notes) + ckpt.notes + ["head replaced by a linear probe fitted here"],
    )
    return build_audit_model(card, state, checkpoint), card


def _accuracy(features: np.ndarray, labels: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    if len(labels) == 0:
        return float("nan")
    return float(100.0 * ((features @ w.T + b).argmax(1) == labels).mean())


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
    from ..features import extract_features

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

