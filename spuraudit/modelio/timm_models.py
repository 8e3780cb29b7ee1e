"""timm models (`timm:<name>`), when the optional `timm` package is installed.

Built with `timm.create_model(name, pretrained=False, num_classes=n)`; weights come from the user's
checkpoint. The split follows timm's own interface: `forward_features` gives the feature map (CNNs:
`[B, D, h, w]`; channels-last models such as Swin: permuted to channels first; token models: the patch
tokens reshaped to a grid), `forward_head(..., pre_logits=True)` gives the pooled features `r(x)`, and
`get_classifier()` is the head, which must be a single `nn.Linear`.

Vision transformers (`timm.models.vision_transformer.VisionTransformer` and its subclasses: ViT, DeiT,
...) are split one block before the output, as described in `spuraudit.modelio.vit`. Other token models
use their final tokens as the feature map; where they pool with a class token, gradient-based CAMs of that
map are blank (the class token does not read the final patch tokens), which is a limit of such models.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn

from ..common import IMAGENET_MEAN, IMAGENET_STD
from .architecture import Architecture, Split, UnknownArchitecture
from .vit import PREFIX_ATTRIBUTE, map_to_tokens, split_timm_vit, tokens_to_map


def timm_available() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def timm_model_names() -> list[str]:
    """timm's model names, or [] when timm is not installed."""
    return list(_names()) if timm_available() else []


def _pretrained_defaults(model_name: str) -> tuple[tuple[int, int], tuple, tuple, bool]:
    """(input size, mean, std, fixed size?) timm records for the model's usual weights; ImageNet defaults otherwise."""
    import timm

    cfg = None
    try:
        cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=True)
    except Exception:  # older timm or names without a config: the defaults below are the usual ones
        cfg = None
    if cfg is None:
        return (224, 224), IMAGENET_MEAN, IMAGENET_STD, False
    _, h, w = cfg.input_size
    return (h, w), tuple(cfg.mean), tuple(cfg.std), bool(cfg.fixed_input_size)


def timm_architecture(model_name: str) -> Architecture:
    if not timm_available():
        raise UnknownArchitecture(
            f"timm:{model_name} needs the optional `timm` package (pip install timm), which is not installed."
        )
    import timm

    if model_name not in _names() and model_name.split(".")[0] not in _names():
        raise UnknownArchitecture(
            f"timm has no model '{model_name}'. See timm.list_models() for the names (e.g. resnet50, vit_small_patch16_224)."
        )
    size, mean, std, fixed = _pretrained_defaults(model_name)

    def build(num_classes: int, _name=model_name) -> nn.Module:
        return timm.create_model(_name, pretrained=False, num_classes=num_classes)

    return Architecture(
        name=f"timm:{model_name}",
        build=build,
        split=split_timm,
        default_input_size=size,
        description=f"timm {model_name}",
        default_mean=mean,
        default_std=std,
        min_input_size=size[0] if fixed else 32,
        fixed_input_size=fixed,
    )


def _classifier_owner(net: nn.Module) -> str:
    """Name of the top-level child that holds the classifier ('fc', 'head', 'classifier', ...)."""
    classifier = net.get_classifier()
    for name, module in net.named_modules():
        if module is classifier and name:
            return name.split(".")[0]
    raise UnknownArchitecture(f"timm {type(net).__name__}: cannot find its classifier among its modules")


class TimmFeatureMap(nn.Module):
    """`forward_features` as a channels-first feature map [B, D, h, w]."""

    def __init__(self, net: nn.Module, head_owner: str):
        super().__init__()
        self.net = _Unregistered(net)
        # Everything but the classifier's container, so that .to(), .eval() and optimisers reach it.
        self.parts = nn.ModuleDict({n: c for n, c in net.named_children() if n != head_owner})
        for name, param in net.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.channels_last = getattr(net, "output_fmt", "NCHW") == "NHWC"
        self.num_prefix = int(getattr(net, "num_prefix_tokens", 1 if getattr(net, "cls_token", None) is not None else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net.module.forward_features(x)
        if out.ndim == 4:
            return out.permute(0, 3, 1, 2) if self.channels_last else out
        if out.ndim == 3:
            side = math.isqrt(out.shape[1] - self.num_prefix)
            if side * side != out.shape[1] - self.num_prefix:
                raise ValueError(f"cannot arrange {out.shape[1] - self.num_prefix} tokens in a square grid")
            return tokens_to_map(out, self.num_prefix, (side, side))
        raise ValueError(f"forward_features returned a {out.ndim}-D tensor; expected a feature map or tokens")


class TimmPooledFeatures(nn.Module):
    """`forward_head(pre_logits=True)`: timm's own pooling (and norms) before the classifier."""

    def __init__(self, net: nn.Module, head_owner: str, channels_last: bool):
        super().__init__()
        self.net = _Unregistered(net)
        self.head_container = getattr(net, head_owner)
        self.channels_last = channels_last

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        if hasattr(fmap, PREFIX_ATTRIBUTE):
            raw = map_to_tokens(fmap)
        else:
            raw = fmap.permute(0, 2, 3, 1) if self.channels_last else fmap
        return self.net.module.forward_head(raw, pre_logits=True)


class _Unregistered:
    """Holds a module without registering it as a child."""

    def __init__(self, module: nn.Module):
        self.module = module


def split_timm(net: nn.Module) -> Split:
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(net, VisionTransformer):
        return split_timm_vit(net)
    head = net.get_classifier()
    if not isinstance(head, nn.Linear):
        raise UnknownArchitecture(
            f"timm {type(net).__name__}: its classifier is {type(head).__name__}, not a single linear layer, so "
            "importance r·W is undefined. Use linear-probe mode to fit a linear head on its features."
        )
    owner = _classifier_owner(net)
    trunk = TimmFeatureMap(net, owner)
    return Split(trunk=trunk, head=head, pool=TimmPooledFeatures(net, owner, trunk.channels_last))
