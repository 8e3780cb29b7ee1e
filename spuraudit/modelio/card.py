"""Model folders: `models/<name>/` with `weights.pt` and a readable `model.yaml` card."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from ..atomic import atomic_dir
from ..common import IMAGENET_MEAN, IMAGENET_STD
from ..typed import TypedValueError, from_mapping
from .adapter import AuditModel
from .checkpoint import CheckpointError, fit_state_dict, read_checkpoint
from .registry import get_architecture

CARD_FILE = "model.yaml"
CARD_SCHEMA_VERSION = 2  # 1: no version key; 2: version recorded, unknown keys rejected
WEIGHTS_FILE = "weights.pt"


def _to_builtin(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a model card")


@dataclass
class ModelCard:
    name: str
    architecture: str
    class_names: list[str]
    input_size: list[int] = field(default_factory=lambda: [224, 224])  # [H, W]
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    weights: str = WEIGHTS_FILE
    source: str = "uploaded"  # trained here | uploaded | mitigation | path
    parent: str | None = None
    method: str | None = None
    options: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    notes: list[str] = field(default_factory=list)
    schema_version: int = CARD_SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_yaml(self) -> str:
        # A JSON round trip turns NumPy scalars in metrics into plain numbers YAML can write.
        plain = json.loads(json.dumps(asdict(self), default=_to_builtin))
        plain = {"schema_version": plain.pop("schema_version"), **plain}  # first, where a reader looks
        return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str, source: str = CARD_FILE) -> "ModelCard":
        """Read a card; a card without `schema_version` (version 1) is read as it is and upgraded.

        Unknown keys and values of the wrong type raise CheckpointError naming `source` and the key."""
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise CheckpointError(f"{source}: not readable YAML ({err}).") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: a model card is a mapping of keys to values.")
        missing = [k for k in ("name", "architecture", "class_names") if k not in data]
        if missing:
            raise CheckpointError(f"{source}: model card lacks {missing}.")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > CARD_SCHEMA_VERSION:
            raise CheckpointError(f"{source}: schema_version {version!r} is newer than this spuraudit understands "
                                  f"({CARD_SCHEMA_VERSION}); update spuraudit.")
        try:
            card = from_mapping(cls, data, source)
        except TypedValueError as err:
            raise CheckpointError(str(err)) from None
        card.schema_version = CARD_SCHEMA_VERSION  # an old card is upgraded as it is read
        return card


def build_audit_model(card: ModelCard, state: dict[str, torch.Tensor] | None = None, source="weights") -> AuditModel:
    """Instantiate the card's architecture, load `state` strictly, and wrap it for the audit."""
    arch = get_architecture(card.architecture)
    net = arch.build(card.num_classes)
    if state is not None:
        fit_state_dict(net, state, source)
    split = arch.split(net)
    model = AuditModel(split.trunk, split.head, card.mean, card.std, pool=split.pool)
    # Keep the original network so weights save in its own (standard) layout.
    object.__setattr__(model, "network", net)
    return model.eval()


def network_state(model: AuditModel) -> dict[str, torch.Tensor]:
    return getattr(model, "network", model).state_dict()


def load_model(folder: str | Path, trust_pickle: bool = False) -> tuple[AuditModel, ModelCard]:
    folder = Path(folder)
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise CheckpointError(f"{folder}: no {CARD_FILE} here; is this a spuraudit model folder?")
    card = ModelCard.from_yaml(card_path.read_text(), str(card_path))
    if card.architecture == "torchscript":  # the folder holds the whole scripted network, not a state dict
        from .torchscript import load_torchscript_model

        return load_torchscript_model(folder, card), card
    ckpt = read_checkpoint(folder / card.weights, trust_pickle=trust_pickle)
    return build_audit_model(card, ckpt.state_dict, folder / card.weights), card


def save_model(model: AuditModel | nn.Module, card: ModelCard, folder: str | Path) -> Path:
    """Write weights and card atomically: the folder appears complete or not at all."""
    state = network_state(model) if isinstance(model, AuditModel) else model.state_dict()
    return write_model_folder(
        folder, card, lambda tmp: torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp / card.weights))


def write_model_folder(folder: str | Path, card: ModelCard, write_weights) -> Path:
    """Fill a temporary sibling folder (`write_weights(tmp)`, then the card) and rename it into place, so a
    model folder appears complete or not at all, whatever kind of weights file it holds."""
    folder = Path(folder)
    with atomic_dir(folder, overwrite=True) as tmp:
        write_weights(tmp)
        (tmp / CARD_FILE).write_text(card.to_yaml())
    return folder


def import_checkpoint(
    checkpoint: str | Path,
    card: ModelCard,
    folder: str | Path,
    trust_pickle: bool = False,
) -> tuple[AuditModel, ModelCard]:
    """Check a user's checkpoint against `card` and store it as a model folder."""
    ckpt = read_checkpoint(checkpoint, trust_pickle=trust_pickle)
    if ckpt.mean is not None:
        card.mean, card.std = ckpt.mean, ckpt.std
    card.notes = list(card.notes) + ckpt.notes
    model = build_audit_model(card, ckpt.state_dict, checkpoint)
    save_model(model, card, folder)
    return model, card


def weights_hash(model: AuditModel | nn.Module) -> str:
    """Content hash of the weights: the feature store's cache key for the model."""
    h = hashlib.sha256()
    state = network_state(model) if isinstance(model, AuditModel) else model.state_dict()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
