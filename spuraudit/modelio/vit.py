"""Vision transformers as trunk (feature map) -> pool -> head.

A ViT has no convolutional feature map: its last layers hold one token per image patch plus a class
token. The split chosen here, for torchvision's `VisionTransformer` and timm's:

- **feature map** = the patch tokens entering the LAST encoder block, class token dropped, reshaped from
  `[B, h·w, D]` to `[B, D, h, w]` (the same reshape pytorch-grad-cam's ViT examples use, at the same layer:
  the input of the last block). Taking them one block before the output matters for CAMs: after the last
  block the class token no longer reads the patch tokens, so gradients of the logits with respect to the
  final patch tokens are exactly zero and every gradient-based CAM would be blank.
- **pooled features** `r(x)` = what the head sees: the class token after the last block and the final
  LayerNorm (plus torchvision's optional pre-logits layer). So importance `r·W` is exact, but `r_d` is NOT
  the average of feature-map channel `d`; a NAM of channel `d` shows where channel `d` of the residual
  stream is high on the patches one block earlier, an approximation of where feature `d` comes from.

The class token (and any other prefix tokens) travel from trunk to pool as an attribute of the feature-map
tensor, so `pool(trunk(x))` works without state on the modules; calling the pool on a feature map that did
not come from this trunk raises an error that says so.
"""

from __future__ import annotations

import torch
from torch import nn

from .architecture import Split, UnknownArchitecture

PREFIX_ATTRIBUTE = "spuraudit_prefix_tokens"


def tokens_to_map(tokens: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """[B, prefix + h·w, D] -> feature map [B, D, h, w] carrying the prefix tokens [B, prefix, D] along."""
    b, n, d = tokens.shape
    h, w = grid
    if n - num_prefix != h * w:
        raise ValueError(f"expected {num_prefix} + {h}×{w} tokens, got {n}")
    fmap = tokens[:, num_prefix:].transpose(1, 2).reshape(b, d, h, w)
    setattr(fmap, PREFIX_ATTRIBUTE, tokens[:, :num_prefix])
    return fmap


def map_to_tokens(fmap: torch.Tensor) -> torch.Tensor:
    """The inverse of `tokens_to_map`: [B, D, h, w] (+ its prefix tokens) -> [B, prefix + h·w, D]."""
    prefix = getattr(fmap, PREFIX_ATTRIBUTE, None)
    if prefix is None:
        raise RuntimeError(
            "this ViT feature map has lost its class token: pass the trunk's output tensor itself to the pool "
            "(AuditModel.forward_all / features do), not a copy of it."
        )
    return torch.cat([prefix, fmap.flatten(2).transpose(1, 2)], dim=1)


class TorchvisionViTTrunk(nn.Module):
    """torchvision ViT up to the input of its last encoder block, as a [B, D, h, w] patch-token map."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.encoder_dropout = vit.encoder.dropout
        self.blocks = vit.encoder.layers[:-1]
        self.image_size = vit.image_size
        # Parameters are shared with the network (not copied), so its weights stay the only truth.
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"this ViT takes {self.image_size}×{self.image_size} inputs (its position embeddings are fixed), "
                f"got {tuple(x.shape[-2:])}; set the model card's input_size to [{self.image_size}, {self.image_size}]."
            )
        patches = self.conv_proj(x)  # [B, D, h, w]
        grid = tuple(patches.shape[-2:])
        tokens = patches.flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = self.blocks(self.encoder_dropout(tokens + self.pos_embedding))
        return tokens_to_map(tokens, 1, grid)


class TorchvisionViTPool(nn.Module):
    """Last encoder block + final LayerNorm, then the class token (+ pre-logits layer when present)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.last_block = vit.encoder.layers[-1]
        self.norm = vit.encoder.ln
        self.pre_logits = nn.Sequential(*list(vit.heads)[:-1])

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.last_block(map_to_tokens(fmap)))
        return self.pre_logits(tokens[:, 0])


def split_torchvision_vit(vit: nn.Module) -> Split:
    head = list(vit.heads)[-1]
    if not isinstance(head, nn.Linear):
        raise UnknownArchitecture("this VisionTransformer's `heads` does not end in a linear layer")
    if len(vit.encoder.layers) < 1:
        raise UnknownArchitecture("this VisionTransformer has no encoder blocks")
    return Split(trunk=TorchvisionViTTrunk(vit), head=head, pool=TorchvisionViTPool(vit))


class TimmViTTrunk(nn.Module):
    """timm VisionTransformer up to the input of its last block, as a [B, D, h, w] patch-token map."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = _Unregistered(vit)  # call its methods without making its head part of the trunk
        self.patch_embed = vit.patch_embed
        self.pos_drop = vit.pos_drop
        self.patch_drop = vit.patch_drop
        self.norm_pre = vit.norm_pre
        self.blocks = vit.blocks[:-1]
        # The class/register tokens and position embeddings are the network's own parameters; registering
        # the same Parameter objects here makes .to(device), .eval() and optimisers reach them.
        for name, param in vit.named_parameters(recurse=False):
            self.register_parameter(name, param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit.module
        tokens = self.patch_embed(x)
        if tokens.ndim == 4:  # dynamic image size: [B, h, w, D]
            grid = tuple(tokens.shape[1:3])
        else:
            ph, pw = vit.patch_embed.patch_size
            grid = (x.shape[-2] // ph, x.shape[-1] // pw)
        tokens = self.norm_pre(self.patch_drop(vit._pos_embed(tokens)))
        tokens = self.blocks(tokens)
        return tokens_to_map(tokens, vit.num_prefix_tokens, grid)


_TIMM_VIT_TRUNK_PARTS = ("patch_embed", "pos_drop", "patch_drop", "norm_pre", "blocks")


class TimmViTPool(nn.Module):
    """Last block + final norm, then timm's own pooling (`forward_head(pre_logits=True)`)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = _Unregistered(vit)
        self.last_block = vit.blocks[-1]
        self.norm = vit.norm
        # Whatever forward_head uses (attention pool, fc_norm, dropout, ...) must be registered too.
        self.rest = nn.ModuleDict(
            {name: child for name, child in vit.named_children() if name not in _TIMM_VIT_TRUNK_PARTS + ("norm",)}
        )

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.last_block(map_to_tokens(fmap)))
        return self.vit.module.forward_head(tokens, pre_logits=True)


class _Unregistered:
    """Holds a module without registering it as a child (so it is not saved or moved twice)."""

    def __init__(self, module: nn.Module):
        self.module = module


def split_timm_vit(vit: nn.Module) -> Split:
    head = vit.get_classifier()
    if not isinstance(head, nn.Linear):
        raise UnknownArchitecture(
            f"timm {type(vit).__name__}: the classifier is {type(head).__name__}, not a linear layer "
            "(a model built with num_classes=0 has none; give it the number of classes)."
        )
    if len(vit.blocks) < 1:
        raise UnknownArchitecture("this VisionTransformer has no blocks")
    return Split(trunk=TimmViTTrunk(vit), head=head, pool=TimmViTPool(vit))
