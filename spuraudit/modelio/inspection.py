"""Looking inside a checkpoint before committing to it: how many classes its head has, whether it fits.

Used by the upload page to prefill and check the class list, and to offer linear-probe mode when the file
holds only a backbone.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, UntrustedPickleError, read_checkpoint
from .registry import Architecture, UnknownArchitecture, get_architecture


@dataclass
class CheckpointSummary:
    """What a checkpoint holds, as far as the audit cares."""

    path: str
    architecture: str | None
    num_classes: int | None  # outputs of the head; None when the file holds no head (a backbone)
    head_key: str | None  # the state-dict key of the head's weight
    num_tensors: int = 0
    notes: list[str] = field(default_factory=list)
    fit_error: str | None = None  # why the file does not fit the architecture, when it does not
    needs_trust: bool = False  # refused because it needs full pickle loading
    refusal: str | None = None  # the error text shown to the user when the file cannot be read

    @property
    def readable(self) -> bool:
        return self.refusal is None

    @property
    def backbone_only(self) -> bool:
        return self.readable and self.num_classes is None


def build_skeleton(arch: Architecture, num_classes: int = 2) -> nn.Module:
    """The network without allocating or initialising weights where possible (meta device)."""
    try:
        with torch.device("meta"):
            return arch.build(num_classes)
    except (NotImplementedError, RuntimeError):
        # A few constructors compute sizes from tensors (torchvision RegNet), which meta tensors cannot do.
        return arch.build(num_classes)


def head_weight_key(arch: Architecture, net: nn.Module) -> str | None:
    """The state-dict key of the split's head weight in `net` (e.g. 'fc.weight', 'heads.head.weight')."""
    split = arch.split(net)
    for name, param in net.named_parameters():
        if param is split.head.weight:
            return name
    return None


def last_linear_key(state: dict[str, torch.Tensor]) -> str | None:
    """Without an architecture: the last 2-D `*.weight` tensor, which is the final linear layer in the
    registration order almost every classifier follows (the head is defined last)."""
    keys = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 2 and v.is_floating_point()]
    return keys[-1] if keys else None


def head_of_state(state: dict[str, torch.Tensor], architecture: str | None = None) -> tuple[str | None, int | None]:
    """(head weight key, number of classes) of a state dict; (None, None) when it holds no head."""
    if architecture:
        arch = get_architecture(architecture)
        key = head_weight_key(arch, build_skeleton(arch))
        if key is not None:
            state = arch.prepare_state(state) if arch.prepare_state else state
            return (key, int(state[key].shape[0])) if key in state else (None, None)
    key = last_linear_key(state)
    return (key, int(state[key].shape[0])) if key else (None, None)


def fit_problems(architecture: str, state: dict[str, torch.Tensor], num_classes: int) -> str | None:
    """None when `state` loads into the architecture built for `num_classes`; else the mismatch list."""
    from .checkpoint import fit_state_dict

    arch = get_architecture(architecture)
    net = build_skeleton(arch, num_classes)
    state = arch.prepare_state(state) if arch.prepare_state else state
    try:
        with warnings.catch_warnings():
            # Loading into meta tensors is a no-op PyTorch warns about; only the key/shape check matters here.
            warnings.simplefilter("ignore")
            fit_state_dict(net, state, "the checkpoint")
    except CheckpointError as exc:
        return str(exc)
    return None


def summarize_checkpoint(path: str | Path, architecture: str | None = None, trust_pickle: bool = False,
                         options: dict | None = None, input_size=(224, 224)) -> CheckpointSummary:
    """Read a checkpoint and describe it; never raises for a bad file, it reports why instead."""
    path = Path(path)
    summary = CheckpointSummary(path=str(path), architecture=architecture, num_classes=None, head_key=None)
    if architecture == "torchscript":
        from .torchscript import load_torchscript_network, split_torchscript

        try:
            net = load_torchscript_network(path)
            split = split_torchscript(net, dict(options or {}), tuple(input_size))
        except CheckpointError as exc:
            summary.refusal = str(exc)
            return summary
        summary.num_classes = split.head.out_features
        summary.num_tensors = len(net.state_dict())
        summary.notes.append("TorchScript network: the whole model is in the file")
        return summary
    try:
        ckpt = read_checkpoint(path, trust_pickle=trust_pickle)
    except UntrustedPickleError as exc:
        summary.needs_trust, summary.refusal = True, str(exc)
        return summary
    except CheckpointError as exc:
        summary.refusal = str(exc)
        return summary
    summary.num_tensors = len(ckpt.state_dict)
    summary.notes = list(ckpt.notes)
    try:
        summary.head_key, summary.num_classes = head_of_state(ckpt.state_dict, architecture)
    except UnknownArchitecture as exc:
        summary.fit_error = str(exc)
        summary.head_key, summary.num_classes = head_of_state(ckpt.state_dict, None)
        return summary
    if architecture:
        try:
            n = summary.num_classes or 2
            state = ckpt.state_dict
            if summary.num_classes is None:
                summary.notes.append("no head found: this looks like a backbone; use linear-probe mode")
                arch = get_architecture(architecture)
                key = head_weight_key(arch, build_skeleton(arch, n))
                # A backbone lacks the head's weight and bias; judge the fit on the rest.
                state = {**state, **_fresh_head(arch, n, key)}
            summary.fit_error = fit_problems(architecture, state, n)
        except UnknownArchitecture as exc:
            summary.fit_error = str(exc)
    return summary


def _fresh_head(arch: Architecture, num_classes: int, weight_key: str | None) -> dict[str, torch.Tensor]:
    """Placeholder head tensors with the right shapes (meta tensors: nothing is allocated)."""
    if weight_key is None:
        return {}
    net = build_skeleton(arch, num_classes)
    prefix = weight_key[: -len("weight")]
    return {k: v for k, v in net.state_dict().items() if k.startswith(prefix) and k[len(prefix):] in ("weight", "bias")}
