"""Looking inside a checkpoint before committing to it: how many classes its head has, whether it fits.

Used by the upload page to prefill and check the class list, and to offer linear-probe mode when the file
holds only a backbone.
"""

from __future__ import annotations

import functools
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
    # the file's tensors are not this architecture's at all (so a missing head says nothing about a backbone)
    layout_mismatch: bool = False
    refusal: str | None = None  # the error text shown to the user when the file cannot be read

    @property
    def readable(self) -> bool:
        return self.refusal is None

    @property
    def backbone_only(self) -> bool:
        return self.readable and self.num_classes is None and not self.layout_mismatch


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
                arch = get_architecture(architecture)
                key = head_weight_key(arch, build_skeleton(arch, n))
                # A backbone lacks the head's weight and bias; judge the fit on the rest.
                state = {**state, **_fresh_head(arch, n, key)}
            summary.fit_error = fit_problems(architecture, state, n)
            if summary.num_classes is None:
                if summary.fit_error is None:
                    summary.notes.append("no head found: this looks like a backbone; use linear-probe mode")
                else:  # neither head nor trunk fit: the wrong architecture, not a backbone
                    summary.layout_mismatch = True
                    summary.head_key, summary.num_classes = head_of_state(ckpt.state_dict, None)
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


# ---- which architecture does a file fit? --------------------------------------------------------------
@dataclass
class ArchitectureMatch:
    """How well a checkpoint's tensors fit one architecture."""

    architecture: str
    score: float  # in [0, 1]: 1 = every tensor of the file and of the network matches by name and shape
    matched: int  # tensors with the same name and shape (the head compared on its input width only)
    file_tensors: int
    network_tensors: int
    head_found: bool  # the file holds this architecture's head weight (any number of classes)
    num_classes: int | None  # the file's head outputs, when found

    @property
    def exact(self) -> bool:
        return self.matched == self.file_tensors == self.network_tensors


@functools.lru_cache(maxsize=256)
def _network_signature(name: str) -> tuple[dict[str, tuple[int, ...]], str | None]:
    """{state-dict key: shape} of the architecture built with 2 classes, and its head weight key."""
    arch = get_architecture(name)
    net = build_skeleton(arch, 2)
    return _shapes(net.state_dict()), head_weight_key(arch, net)


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    # BatchNorm's step counters are often left out of saved files and are never needed to load one.
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def candidate_architectures(state: dict[str, torch.Tensor]) -> list[str]:
    """Names worth trying for a state dict: spuraudit's registry and torchvision's classifiers. RegNets are
    slow to build (their constructors compute on real tensors), so they are tried only when the file
    has their layout."""
    from .registry import list_architectures, torchvision_model_names

    regnet_like = any(k.startswith("trunk_output.") for k in state)
    names = [n for n in list_architectures() if n != "torchscript"]
    names += [f"torchvision:{n}" for n in torchvision_model_names()
              if regnet_like or not n.startswith("regnet")]
    return names


def match_architecture(name: str, state: dict[str, torch.Tensor]) -> ArchitectureMatch:
    """Compare a state dict with one architecture's tensors (names and shapes; nothing is loaded)."""
    arch = get_architecture(name)
    signature, head_key = _network_signature(name)
    prepared = arch.prepare_state(state) if arch.prepare_state else state
    shapes = _shapes(prepared)
    head_bias = head_key[: -len("weight")] + "bias" if head_key else None
    matched = 0
    for key, shape in signature.items():
        got = shapes.get(key)
        if got is None:
            continue
        if key in (head_key, head_bias):  # the head's class count is the file's own business
            matched += int(len(got) == len(shape) and got[1:] == shape[1:])
        else:
            matched += int(got == shape)
    head = shapes.get(head_key) if head_key else None
    head_found = head is not None and len(head) == 2 and head[1:] == signature[head_key][1:]
    file_n, net_n = len(shapes), len(signature)
    score = matched / max(file_n, net_n, 1)
    return ArchitectureMatch(name, score, matched, file_n, net_n, head_found,
                             int(head[0]) if head_found else None)


def suggest_architectures(state: dict[str, torch.Tensor], limit: int = 5,
                          names: list[str] | None = None) -> list[ArchitectureMatch]:
    """Architectures ranked by how well the file fits them, best first (candidates with no tensor in
    common are left out). Building each candidate's skeleton is remembered for the process."""
    from .registry import list_architectures

    if names is None:
        names = candidate_architectures(state)
        # spuraudit's own architectures first: an exact fit there spares building every torchvision model
        first = [n for n in names if n in set(list_architectures())]
        found = _matches(first, state)
        if not any(m.exact for m in found):
            found += _matches([n for n in names if n not in set(first)], state)
    else:
        found = _matches(names, state)
    matches = [m for m in found if m.matched]
    matches.sort(key=lambda m: (-m.score, -m.head_found, m.architecture))
    return matches[:limit]


def _matches(names: list[str], state: dict[str, torch.Tensor]) -> list[ArchitectureMatch]:
    out = []
    for name in names:
        try:
            out.append(match_architecture(name, state))
        except Exception:  # noqa: BLE001  (a candidate that cannot be built is simply not proposed)
            continue
    return out


def suggest_for_file(path: str | Path, trust_pickle: bool = False, limit: int = 5) -> list[ArchitectureMatch]:
    """`suggest_architectures` for a checkpoint file; [] when the file cannot be read as a state dict."""
    try:
        ckpt = read_checkpoint(Path(path), trust_pickle=trust_pickle)
    except CheckpointError:
        return []
    return suggest_architectures(ckpt.state_dict, limit=limit)
