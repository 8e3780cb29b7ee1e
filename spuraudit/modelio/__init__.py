"""Checkpoints -> `AuditModel` (feature map, pooled features, head), and the model registry."""

from .adapter import AuditModel, GlobalAveragePool, Normalize
from .card import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCard,
    build_audit_model,
    import_checkpoint,
    load_model,
    network_state,
    save_model,
    weights_hash,
)
from .checkpoint import Checkpoint, CheckpointError, UntrustedPickleError, fit_state_dict, read_checkpoint
from .registry import Architecture, Split, UnknownArchitecture, get_architecture, list_architectures, register
