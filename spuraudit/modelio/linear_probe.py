"""Linear-probe mode, the model side: a backbone with a new head, and the fit of that head.

The user has only a backbone (an ImageNet ResNet-50, the adversarially robust one, ...). We extract its
pooled features `r(x)` (trunk + pool, exactly what the audit later uses) on the dataset's training split,
fit a multinomial logistic regression on them, and store backbone + new head as an ordinary model folder
(same architecture, `source: linear probe`, the probe's accuracies in `metrics`). From then on it is
audited like any other model, and importance `r·W` refers to the fitted head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.table import DatasetError, ImageTable
from ..logistic import fit_logistic_head
from .card import ModelCard, build_audit_model
from .checkpoint import CheckpointError, read_checkpoint
from .inspection import head_weight_key
from .registry import get_architecture


def fit_linear_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    class_balanced: bool = False,
    l2: float = 1e-4,
    fit_bias: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The probe's head: L2 logistic regression on standardised features. features [N, D], labels [N] ->
    (W [C, D], b [C]) for the raw features.

    `l2` is the strength on the mean loss (`mean loss + l2/2 ||W||²`), scikit-learn's `C = 1 / (l2 N)`;
    `class_balanced` weights each class's loss by N / (C · n_c). With `fit_bias=False` the returned b is
    all zeros (for heads without a bias).
    """
    if len(labels) == 0:
        raise DatasetError("linear probe: no training images to fit the head on.")
    return fit_logistic_head(features, labels, num_classes, C=1.0 / (l2 * len(labels)), penalty="l2",
                             class_balanced=class_balanced, fit_bias=fit_bias)


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
