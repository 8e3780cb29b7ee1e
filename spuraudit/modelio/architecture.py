"""The two types every architecture module shares: `Architecture` (a constructor and a split) and `Split`.

Kept apart from the registry so the family modules (CIFAR ResNets, ViT, timm, TorchScript) can use them
while the registry imports those modules: no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..common import IMAGENET_MEAN, IMAGENET_STD


class UnknownArchitecture(ValueError):
    pass


@dataclass(frozen=True)
class Split:
    """How an instantiated network divides into the pieces the audit needs."""

    trunk: nn.Module  # outputs the feature map [B, D, h, w]
    head: nn.Linear  # penultimate features [B, D] -> logits
    pool: nn.Module | None = None  # feature map -> penultimate features (default: global average)


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[int], nn.Module]  # num_classes -> untrained network
    split: Callable[[nn.Module], Split]
    default_input_size: tuple[int, int] = (224, 224)
    description: str = ""
    # Normalisation the usual weights of this architecture expect (inputs in [0, 1]).
    default_mean: tuple[float, ...] = IMAGENET_MEAN
    default_std: tuple[float, ...] = IMAGENET_STD
    # Smallest square input the network runs on; `fixed_input_size` means only the default works.
    min_input_size: int = 32
    fixed_input_size: bool = False
    # Adjusts a checkpoint's state dict to the built network (e.g. drops auxiliary classifiers).
    prepare_state: Callable[[dict], dict] | None = None
