"""Reading checkpoints in the layouts people actually have, with errors that say what to do."""

from __future__ import annotations

import json
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is; the message names the file and the fix."""


class UntrustedPickleError(CheckpointError):
    """The file needs full pickle loading, which can run arbitrary code."""


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    # Normalisation found inside the file (the `robustness` layout stores it); None when absent.
    mean: list[float] | None = None
    std: list[float] | None = None
    notes: list[str] = field(default_factory=list)


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
_PREFIXES = ("module.model.", "module.", "model.")


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


# Bytes per element of the dtypes safetensors writes; the header's shapes must match the data's size.
_SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                         "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_SAFETENSORS_HEADER = 100 * 1024**2  # safetensors' own limit; real headers are kilobytes


def _check_safetensors(path: Path) -> None:
    """Read the header before the library does, so a broken or lying file gets a message, not a crash:
    the header size must fit the file, the header must be JSON, and every tensor's shape and dtype must
    add up to the bytes it claims, inside the file."""
    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a valid .safetensors file: {why}. Re-save it with "
                               "safetensors.torch.save_file, or give a torch.save checkpoint.")

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise refuse(f"only {size} bytes long, shorter than the 8-byte header size")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER or n > size - 8:
            raise refuse(f"its header claims {n:,} bytes but the file holds {size - 8:,} after the size field")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise refuse(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise refuse("the header is not a JSON object")
    data_bytes = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = math.prod(int(d) for d in shape)
            ok_numbers = all(int(d) >= 0 for d in shape) and 0 <= int(begin) <= int(end)
        except (KeyError, TypeError, ValueError):
            raise refuse(f"tensor '{name}' lacks a dtype, shape or data_offsets entry") from None
        if dtype not in _SAFETENSORS_ITEMSIZE:
            raise refuse(f"tensor '{name}' has an unknown dtype {dtype!r}")
        if not ok_numbers or int(end) > data_bytes:
            raise refuse(f"tensor '{name}' claims bytes {begin}..{end} but the data holds {data_bytes:,} bytes")
        if count * _SAFETENSORS_ITEMSIZE[dtype] != int(end) - int(begin):
            raise refuse(f"tensor '{name}' has shape {shape} of {dtype} ({count * _SAFETENSORS_ITEMSIZE[dtype]:,} "
                         f"bytes) but claims {int(end) - int(begin):,} bytes of data")


def _raw_load(path: Path, trust_pickle: bool):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        _check_safetensors(path)
        try:
            return load_file(str(path))
        except Exception as exc:  # the checks above catch the known cases; the library may still object
            raise CheckpointError(f"{path}: not a readable .safetensors file ({type(exc).__name__}: {exc}).") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        raise UntrustedPickleError(
            f"{path}: this checkpoint contains Python objects beyond tensors, so loading it can run code "
            f"hidden in the file ({str(exc).splitlines()[0]}). If you trust where it came from, load it with "
            "--trust-pickle (CLI) or tick 'I trust this file' (app, where the server allows it); otherwise re-save it as a plain "
            "state dict: torch.save(model.state_dict(), 'weights.pt')."
        ) from None
    except Exception as exc:  # torch raises many kinds on garbage; all mean 'not a checkpoint'
        if _looks_like_torchscript(path):
            raise CheckpointError(
                f"{path} is a TorchScript archive; choose the 'torchscript' architecture for it."
            ) from None
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}). Expected a file "
            "written by torch.save or a .safetensors file."
        ) from None


def _looks_like_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> Checkpoint:
    """Load a state dict from a plain, wrapped, prefixed, `robustness` or safetensors checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    obj = _raw_load(path, trust_pickle)
    notes: list[str] = []
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
        notes.append("file held a whole pickled model; its state dict was used")
    if not _is_tensor_dict(obj) and isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if _is_tensor_dict(inner):
                notes.append(f"weights read from the '{key}' entry")
                obj = inner
                break
    if not _is_tensor_dict(obj):
        found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path}: found no tensors to load (top level: {found}). Expected a state dict, or a dict "
            f"holding one under one of {list(_WRAPPER_KEYS)}."
        )
    state = dict(obj)
    mean = std = None
    if "module.normalizer.new_mean" in state:
        # The robustness library keeps ImageNet normalisation inside the model.
        mean = state["module.normalizer.new_mean"].flatten().tolist()
        std = state["module.normalizer.new_std"].flatten().tolist()
        notes.append("robustness-library layout: normaliser mean/std read from the checkpoint")
        state = {k: v for k, v in state.items() if k.startswith("module.model.")}
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            notes.append(f"prefix '{prefix}' removed")
    _refuse_nonfinite(path, state)
    return Checkpoint(state_dict=state, mean=mean, std=std, notes=notes)


def _refuse_nonfinite(path: Path, state: dict[str, torch.Tensor]) -> None:
    """NaN or infinite weights make every prediction and every feature meaningless, silently: refuse them."""
    bad = []
    for name, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and tensor.numel():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad.append(f"{name} ({int((~finite).sum()):,} of {tensor.numel():,} values)")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(
            f"{path}: {len(bad)} tensors hold NaN or infinite values: {', '.join(bad[:5])}{more}. The training "
            "that wrote it diverged or the file is damaged; use an earlier checkpoint."
        )


def fit_state_dict(net: nn.Module, state: dict[str, torch.Tensor], source: str | Path = "checkpoint") -> None:
    """Load `state` into `net` strictly, or raise an error listing every mismatch."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    # Integer or bool values where the model holds float weights would be cast without a word and give a
    # model that computes nonsense; integer buffers (BatchNorm's counter) are left to load as they are.
    dtypes = [
        f"{k}: checkpoint {str(state[k].dtype).replace('torch.', '')} where the model expects "
        f"{str(expected[k].dtype).replace('torch.', '')}"
        for k in expected
        if k in state and expected[k].is_floating_point() and not state[k].is_floating_point()
    ]
    # BatchNorm's counter is harmless to lack (older checkpoints predate it).
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected or shapes or dtypes:
        def block(title, items):
            if not items:
                return ""
            more = f"\n    ... and {len(items) - 15} more" if len(items) > 15 else ""
            return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:15]) + more

        raise CheckpointError(
            f"{source} does not fit the chosen architecture."
            + block("missing keys", missing)
            + block("unexpected keys", unexpected)
            + block("shape mismatches", shapes)
            + block("integer or bool tensors where the model holds float weights", dtypes)
            + "\nCheck the architecture name and the number of classes"
            + ("; a checkpoint of float weights saved as integers or bools is damaged or not of this model."
               if dtypes else ".")
        )
    net.load_state_dict(state, strict=False)
