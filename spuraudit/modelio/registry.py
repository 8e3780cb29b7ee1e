"""Architecture registry: a name in a model card -> a constructor and a split into trunk, pool and head.

Names look like `torchvision:resnet18`, `spuraudit:cifar_resnet20`, `timm:resnet10t`, `robustness:resnet50`
or `torchscript`. Adding an architecture means adding one `Architecture` entry (or a family rule for
torchvision), nothing else.

Every split keeps the promise of `AuditModel`: `head(pool(trunk(x)))` equals the network's own logits,
`trunk` outputs a feature map `[B, D, h, w]` (and is the layer CAM methods hook), and `head` is the final
`nn.Linear`, so importance `I[c, d] = r_d · W[c, d]` is exact. For most families `pool` is a global
average, so `r_d` is the mean of feature-map channel `d`. Where the network puts more layers between its
last feature map and its last linear layer (VGG, AlexNet, MobileNetV3, MaxViT, ViT), those layers go into
`pool`, and `r_d` is then the input of the last linear layer rather than a plain channel average: the
feature map channels and the neural features no longer correspond one to one. The families' docstrings say
what their `r_d` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .adapter import GlobalAveragePool

from ..common import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported by modelio)


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


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    _REGISTRY[arch.name] = arch
    return arch


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


@dataclass(frozen=True)
class _Family:
    prefixes: tuple[str, ...]
    split: Callable[[nn.Module], Split]
    build_options: tuple[tuple[str, object], ...] = ()
    default_mean: tuple[float, ...] = IMAGENET_MEAN
    default_std: tuple[float, ...] = IMAGENET_STD
    min_input_size: int = 32
    fixed_input_size: bool = False
    prepare_state: Callable[[dict], dict] | None = None


# Order matters only where one prefix starts another (none do today). Minimum sizes were measured.
_TORCHVISION_FAMILIES: list[_Family] = [
    _Family(("resnet", "resnext", "wide_resnet"), _split_resnet),
    _Family(("regnet",), _split_regnet),
    _Family(("densenet",), _split_densenet),
    _Family(("efficientnet", "mobilenet_v2"), _split_features_classifier),
    _Family(("mobilenet_v3",), _split_features_mlp),
    _Family(("vgg",), _split_features_mlp),
    _Family(("alexnet",), _split_features_mlp, min_input_size=63),
    _Family(("convnext",), _split_convnext),
    _Family(("mnasnet",), _split_mnasnet),
    _Family(("shufflenet",), _split_shufflenet),
    # torchvision's pretrained GoogLeNet/Inception weights expect inputs scaled to [-1, 1]; with
    # transform_input off that is exactly mean = std = 0.5.
    _Family(("googlenet",), _split_named_trunk(_GOOGLENET_TRUNK),
            (("aux_logits", False), ("init_weights", True)), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
            prepare_state=_drop_auxiliary_heads),
    _Family(("inception",), _split_named_trunk(_INCEPTION_V3_TRUNK),
            (("aux_logits", False), ("init_weights", True)), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
            min_input_size=75, prepare_state=_drop_auxiliary_heads),
    _Family(("swin",), _split_swin),
    _Family(("maxvit",), _split_maxvit, min_input_size=224, fixed_input_size=True),
    _Family(("vit",), _split_vit, min_input_size=224, fixed_input_size=True),
    _Family(("squeezenet",), _refuse_squeezenet),
]


def torchvision_model_names() -> list[str]:
    """Every torchvision classification model name (`torchvision.models.list_models`)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _family_of(model_name: str) -> _Family | None:
    return next((f for f in _TORCHVISION_FAMILIES if model_name.startswith(f.prefixes)), None)


def _torchvision_architecture(model_name: str) -> Architecture:
    import torchvision

    if model_name not in torchvision_model_names():
        raise UnknownArchitecture(
            f"torchvision has no classification model '{model_name}'. "
            "See torchvision.models.list_models() for the names."
        )
    family = _family_of(model_name)
    if family is None:
        raise UnknownArchitecture(
            f"torchvision:{model_name} is a real torchvision model, but spuraudit does not yet know where its "
            "feature map and linear head are. Supported families: "
            + ", ".join(p for f in _TORCHVISION_FAMILIES for p in f.prefixes)
        )
    options = dict(family.build_options)

    def build(num_classes: int, _name=model_name, _options=options) -> nn.Module:
        return torchvision.models.get_model(_name, weights=None, num_classes=num_classes, **_options)

    size = 299 if model_name == "inception_v3" else 224
    return Architecture(
        name=f"torchvision:{model_name}",
        build=build,
        split=family.split,
        default_input_size=(size, size),
        description=f"torchvision {model_name}",
        default_mean=family.default_mean,
        default_std=family.default_std,
        min_input_size=family.min_input_size,
        fixed_input_size=family.fixed_input_size,
        prepare_state=family.prepare_state,
    )


PLUGINS_VARIABLE = "SPURAUDIT_PLUGINS"
_loaded_plugins: set[str] = set()


def load_plugins() -> None:
    """Import the modules named in $SPURAUDIT_PLUGINS (comma-separated), which `register` their own
    architectures. The variable reaches every process (app, CLI, job workers), so a custom architecture
    works everywhere a built-in one does."""
    import importlib
    import os

    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        if module in _loaded_plugins:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise UnknownArchitecture(
                f"cannot import the plugin module '{module}' named in ${PLUGINS_VARIABLE} ({exc}); make it "
                "importable (on PYTHONPATH, or pip-installed) or remove it from the variable."
            ) from exc
        _loaded_plugins.add(module)


def get_architecture(name: str) -> Architecture:
    """Look up an architecture by its card name (`source:model`, or `torchscript`)."""
    if name not in _REGISTRY:
        load_plugins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    source, _, model_name = name.partition(":")
    if source == "torchvision" and model_name:
        return _torchvision_architecture(model_name)
    if source == "timm" and model_name:
        from .timm_models import timm_architecture

        return timm_architecture(model_name)
    known = ", ".join(sorted(_REGISTRY)) + ", torchvision:<any torchvision classifier>, timm:<any timm model>"
    raise UnknownArchitecture(f"unknown architecture '{name}'. Known: {known}. A custom architecture is "
                              f"registered by a module named in ${PLUGINS_VARIABLE}.")


def list_architectures() -> list[str]:
    """The registered names, plugins' included (torchvision and timm names are resolved on demand, see
    `architecture_names`)."""
    load_plugins()
    return sorted(_REGISTRY)


def architecture_names(include_timm: bool = True) -> list[str]:
    """Every name `get_architecture` accepts: the registry, all torchvision classifiers, timm models when installed."""
    names = list_architectures() + [f"torchvision:{n}" for n in torchvision_model_names()]
    if include_timm:
        from .timm_models import timm_model_names

        names += [f"timm:{n}" for n in timm_model_names()]
    return names


# ---- registered entries --------------------------------------------------------------------------
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
        min_input_size=4,
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


def _register_cifar_resnets() -> None:
    from .cifar_resnet import CIFAR_RESNET_DEPTHS, build_cifar_resnet, split_cifar_resnet

    for depth in CIFAR_RESNET_DEPTHS:
        register(
            Architecture(
                name=f"spuraudit:cifar_resnet{depth}",
                build=lambda n, _d=depth: build_cifar_resnet(_d, n),
                split=split_cifar_resnet,
                default_input_size=(32, 32),
                description=f"ResNet-{depth} for 32×32 CIFAR images (16/32/64 channels, option-A shortcuts)",
                min_input_size=8,
            )
        )


def _torchscript_build(num_classes: int) -> nn.Module:
    raise UnknownArchitecture(
        "a 'torchscript' model is not built from a name: its file holds the whole network. Import it with "
        "spuraudit.modelio.importing.import_model (the app and `spuraudit create` do this)."
    )


def _torchscript_split(net: nn.Module) -> Split:
    from .torchscript import split_torchscript

    return split_torchscript(net, {})


_register_cifar_resnets()
register(
    Architecture(
        name="torchscript",
        build=_torchscript_build,
        split=_torchscript_split,
        description="a TorchScript file (torch.jit.save of a scripted or traced model)",
    )
)
