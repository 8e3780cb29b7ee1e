"""Turning a user's file into a model folder, for every kind of architecture the registry knows.

`import_model` is `card.import_checkpoint` plus what some architectures need on the way in: TorchScript
files are copied as they are (the file is the network) and their split is found and checked; GoogLeNet
and Inception checkpoints lose their auxiliary classifiers. `card.load_model` opens any model folder,
TorchScript ones included.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .adapter import AuditModel
from .card import ModelCard, build_audit_model, save_model, write_model_folder
from .checkpoint import CheckpointError, read_checkpoint
from .registry import get_architecture

TORCHSCRIPT = "torchscript"


def _import_torchscript(checkpoint: Path, card: ModelCard, folder: Path) -> tuple[AuditModel, ModelCard]:
    from .torchscript import SCRIPT_FILE, build_torchscript_model, load_torchscript_network, split_torchscript

    net = load_torchscript_network(checkpoint)
    options = dict(card.options)
    split = split_torchscript(net, options, tuple(card.input_size))  # raises with the fix when none fits
    if split.head.out_features != card.num_classes:
        raise CheckpointError(
            f"{checkpoint}: the TorchScript model's head has {split.head.out_features} outputs but "
            f"{card.num_classes} class names were given ({card.class_names})."
        )
    card.options = {**options, "script": SCRIPT_FILE}
    card.weights = SCRIPT_FILE
    write_model_folder(folder, card, lambda tmp: shutil.copyfile(checkpoint, tmp / SCRIPT_FILE))
    model = build_torchscript_model(folder / SCRIPT_FILE, card.mean, card.std, card.options, card.input_size)
    return model, card


def import_model(
    checkpoint: str | Path,
    card: ModelCard,
    folder: str | Path,
    trust_pickle: bool = False,
) -> tuple[AuditModel, ModelCard]:
    """Check a user's checkpoint against `card` and store it as a model folder (written atomically)."""
    checkpoint, folder = Path(checkpoint), Path(folder)
    if card.architecture == TORCHSCRIPT:
        return _import_torchscript(checkpoint, card, folder)
    arch = get_architecture(card.architecture)
    ckpt = read_checkpoint(checkpoint, trust_pickle=trust_pickle)
    if ckpt.mean is not None:
        card.mean, card.std = ckpt.mean, ckpt.std
    state = arch.prepare_state(ckpt.state_dict) if arch.prepare_state else ckpt.state_dict
    if len(state) != len(ckpt.state_dict):
        ckpt.notes.append(f"{len(ckpt.state_dict) - len(state)} tensors of auxiliary classifiers left out")
    card.notes = list(card.notes) + ckpt.notes
    model = build_audit_model(card, state, checkpoint)
    save_model(model, card, folder)
    return model, card

