"""How the torchvision families divide into trunk, pool and head (used by the registry, and by the
TorchScript importer to recognise a known layout)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .adapter import GlobalAveragePool
from .architecture import Split, UnknownArchitecture


# ---- torchvision family splits -------------------------------------------------------------------
def _split_resnet(net: nn.Module) -> Split:
    """ResNet, ResNeXt, Wide ResNet: `layer4` is the feature map, `fc` the head."""
    trunk = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    return Split(trunk=trunk, head=net.fc)


def _split_regnet(net: nn.Module) -> Split:
    return Split(trunk=nn.Sequential(net.stem, net.trunk_output), head=net.fc)


def _split_densenet(net: nn.Module) -> Split:
    # DenseNet applies a functional ReLU after `features`; make it part of the feature map.
    return Split(trunk=nn.Sequential(net.features, nn.ReLU(inplace=False)), head=net.classifier)


def _split_features_classifier(net: nn.Module) -> Split:
    """EfficientNet (v1, v2), MobileNetV2: `features` then `classifier[-1]` linear (dropout ignored at eval)."""
    head = net.classifier[-1]
    if not isinstance(head, nn.Linear) or head.in_features != _last_channels(net.features):
        raise UnknownArchitecture("classifier is not a single linear layer on pooled features")
    return Split(trunk=net.features, head=head)


def _last_channels(features: nn.Module) -> int:
    convs = [m for m in features.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _split_features_mlp(net: nn.Module) -> Split:
    """VGG, AlexNet, MobileNetV3: `features` is the feature map; the classifier is an MLP.

    The head is the MLP's last linear layer; `pool` = the network's own avgpool + flatten + the MLP layers
    before it. So `r_d` is unit `d` of the MLP's last hidden layer (4096 units for VGG and AlexNet, 1024 or
    1280 for MobileNetV3), not a channel average of the feature map.
    """
    head = net.classifier[-1]
    if not isinstance(head, nn.Linear):
        raise UnknownArchitecture(f"{type(net).__name__}: the classifier does not end in a linear layer")
    pool = nn.Sequential(net.avgpool, nn.Flatten(1), *list(net.classifier)[:-1])
    return Split(trunk=net.features, head=head, pool=pool)


class _ConvNeXtPool(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.gap = GlobalAveragePool()
        self.norm = norm  # ConvNeXt's LayerNorm2d expects [B, D, 1, 1]

    def forward(self, fmap):
        pooled = fmap.mean(dim=(2, 3), keepdim=True)
        return self.norm(pooled).flatten(1)


def _split_convnext(net: nn.Module) -> Split:
    """ConvNeXt: `r_d` is the layer-normalised channel average (the norm mixes channels only by scale)."""
    return Split(trunk=net.features, head=net.classifier[2], pool=_ConvNeXtPool(net.classifier[0]))


def _split_mnasnet(net: nn.Module) -> Split:
    return Split(trunk=net.layers, head=net.classifier[-1])


def _split_shufflenet(net: nn.Module) -> Split:
    trunk = nn.Sequential(net.conv1, net.maxpool, net.stage2, net.stage3, net.stage4, net.conv5)
    return Split(trunk=trunk, head=net.fc)


_GOOGLENET_TRUNK = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b",
)
_INCEPTION_V3_TRUNK = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)


def _split_named_trunk(names: tuple[str, ...]) -> Callable[[nn.Module], Split]:
    """GoogLeNet, Inception-v3: the trunk is the main path's modules in order (auxiliary heads left out)."""

    def split(net: nn.Module) -> Split:
        if getattr(net, "transform_input", False):
            raise UnknownArchitecture(
                f"{type(net).__name__} was built with transform_input=True, which the split would skip; "
                "build it with transform_input=False and use mean = std = (0.5, 0.5, 0.5) instead."
            )
        return Split(trunk=nn.Sequential(*(getattr(net, n) for n in names)), head=net.fc)

    return split


def _drop_auxiliary_heads(state: dict) -> dict:
    """torchvision's GoogLeNet/Inception files carry auxiliary classifiers the audit never uses."""
    return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2.", "AuxLogits."))}


class _ChannelsLastToFirst(nn.Module):
    """[B, h, w, D] -> [B, D, h, w]: Swin's stages keep channels last."""

    def forward(self, x):
        return x.permute(0, 3, 1, 2)


def _split_swin(net: nn.Module) -> Split:
    """Swin (v1, v2): `features` + the final LayerNorm, permuted to channels first; `r_d` is a channel average."""
    return Split(trunk=nn.Sequential(net.features, net.norm, _ChannelsLastToFirst()), head=net.head)


def _split_maxvit(net: nn.Module) -> Split:
    """MaxViT: `blocks` is the feature map; `pool` = average, LayerNorm, Linear, Tanh (so `r_d` is in [-1, 1])."""
    head = net.classifier[-1]
    trunk = nn.Sequential(net.stem, *net.blocks)  # `blocks` is a ModuleList the network loops over
    return Split(trunk=trunk, head=head, pool=nn.Sequential(*list(net.classifier)[:-1]))


def _split_vit(net: nn.Module) -> Split:
    from .vit import split_torchvision_vit

    return split_torchvision_vit(net)


def _refuse_squeezenet(net: nn.Module) -> Split:
    raise UnknownArchitecture(
        "SqueezeNet is not supported: it classifies with a 1×1 convolution followed by a ReLU before its average "
        "pool, so its logits are not a linear function of pooled features and importance r·W would be wrong. "
        "Audit a model with a linear head (e.g. torchvision:mobilenet_v3_small for a small one)."
    )
