"""One adapter between any supported classifier and the audit.

Everything that needs "the feature map", "the pooled features" or "the head" goes through
`AuditModel`. It takes images in [0, 1] (the normalisation lives inside), so feature attacks and
MaskTune's pixel masking work in raw pixel space.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, as a module so it travels with the model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class GlobalAveragePool(nn.Module):
    """[B, D, h, w] -> [B, D]: the neural features r_d(x) of docs/methods.md §1."""

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))


class AuditModel(nn.Module):
    """A classifier split as normalise -> trunk (feature map) -> pool (features) -> head (logits).

    Shapes: x [B, 3, H, W] in [0, 1]; feature map [B, D, h, w]; features [B, D]; logits [B, C].
    `trunk` must output the feature map; it is also the layer CAM methods hook.
    """

    def __init__(
        self,
        trunk: nn.Module,
        head: nn.Linear,
        mean: Sequence[float],
        std: Sequence[float],
        pool: nn.Module | None = None,
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.trunk = trunk
        self.pool = pool if pool is not None else GlobalAveragePool()
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def num_features(self) -> int:
        return self.head.in_features

    @property
    def target_layer(self) -> nn.Module:
        """The module whose output is the feature map (for pytorch-grad-cam)."""
        return self.trunk

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(feature map, features, logits) in one pass."""
        fmap = self.feature_map(x)
        feats = self.pool(fmap)
        return fmap, feats, self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.feature_map(x)))
