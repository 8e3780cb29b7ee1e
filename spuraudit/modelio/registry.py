"""Architecture registry: a name in a model card -> a constructor and a split into trunk and head.

Names look like `torchvision:resnet18`, `spuraudit:digitnet`, `robustness:resnet50`. Adding an
architecture means adding one `Architecture` entry (or a family rule for torchvision), nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .adapter import GlobalAveragePool


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


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    _REGISTRY[arch.name] = arch
    return arch


def _split_resnet(net: nn.Module) -> Split:
    trunk = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    return Split(trunk=trunk, head=net.fc)


def _split_regnet(net: nn.Module) -> Split:
    return Split(trunk=nn.Sequential(net.stem, net.trunk_output), head=net.fc)


def _split_densenet(net: nn.Module) -> Split:
    return Split(trunk=nn.Sequential(net.features, nn.ReLU(inplace=False)), head=net.classifier)


def _split_features_classifier(net: nn.Module) -> Split:
    """EfficientNet, MobileNetV2 style: `features` then `classifier[-1]` linear (dropout ignored at eval)."""
    head = net.classifier[-1]
    if not isinstance(head, nn.Linear) or head.in_features != _last_channels(net.features):
        raise UnknownArchitecture("classifier is not a single linear layer on pooled features")
    return Split(trunk=net.features, head=head)


def _last_channels(features: nn.Module) -> int:
    convs = [m for m in features.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class _ConvNeXtPool(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.gap = GlobalAveragePool()
        self.norm = norm  # ConvNeXt's LayerNorm2d expects [B, D, 1, 1]

    def forward(self, fmap):
        pooled = fmap.mean(dim=(2, 3), keepdim=True)
        return self.norm(pooled).flatten(1)


def _split_convnext(net: nn.Module) -> Split:
    return Split(trunk=net.features, head=net.classifier[2], pool=_ConvNeXtPool(net.classifier[0]))


_TORCHVISION_FAMILIES: list[tuple[tuple[str, ...], Callable[[nn.Module], Split]]] = [
    (("resnet", "resnext", "wide_resnet"), _split_resnet),
    (("regnet",), _split_regnet),
    (("densenet",), _split_densenet),
    (("efficientnet", "mobilenet_v2"), _split_features_classifier),
    (("convnext",), _split_convnext),
]


def _torchvision_architecture(model_name: str) -> Architecture:
    import torchvision

    if model_name not in torchvision.models.list_models(module=torchvision.models):
        raise UnknownArchitecture(
            f"torchvision has no classification model '{model_name}'. "
            "See torchvision.models.list_models() for the names."
        )
    for prefixes, split in _TORCHVISION_FAMILIES:
        if model_name.startswith(prefixes):
            return Architecture(
                name=f"torchvision:{model_name}",
                build=lambda n, _m=model_name: torchvision.models.get_model(_m, weights=None, num_classes=n),
                split=split,
                description=f"torchvision {model_name}",
            )
    raise UnknownArchitecture(
        f"torchvision:{model_name} is a real torchvision model, but spuraudit does not yet know where its "
        "feature map and linear head are. Supported families: "
        + ", ".join(p for prefixes, _ in _TORCHVISION_FAMILIES for p in prefixes)
    )


def get_architecture(name: str) -> Architecture:
    """Look up an architecture by its card name (`source:model`)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    source, _, model_name = name.partition(":")
    if source == "torchvision" and model_name:
        return _torchvision_architecture(model_name)
    known = ", ".join(sorted(_REGISTRY)) + ", torchvision:<any torchvision classifier>"
    raise UnknownArchitecture(f"unknown architecture '{name}'. Known: {known}")


def list_architectures() -> list[str]:
    return sorted(_REGISTRY)


def _build_digitnet(num_classes: int) -> nn.Module:
    from .digitnet import DigitNet

    return DigitNet(num_classes)


register(
    Architecture(
        name="spuraudit:digitnet",
        build=_build_digitnet,
        split=lambda net: Split(trunk=net.features, head=net.fc),
        default_input_size=(28, 28),
        description="small CNN used by the built-in demo",
    )
)


def _build_resnet50(num_classes: int) -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


register(
    Architecture(
        name="robustness:resnet50",
        build=_build_resnet50,
        split=_split_resnet,
        description="ResNet-50 in the `robustness` library layout (adversarially trained ImageNet models)",
    )
)
