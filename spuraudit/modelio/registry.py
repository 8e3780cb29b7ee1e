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

from ..common import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (re-exported by modelio)
from .architecture import Architecture, Split, UnknownArchitecture  # noqa: F401  (re-exported)
from .splits import (  # noqa: F401
    _ChannelsLastToFirst,
    _ConvNeXtPool,
    _GOOGLENET_TRUNK,
    _INCEPTION_V3_TRUNK,
    _drop_auxiliary_heads,
    _last_channels,
    _refuse_squeezenet,
    _split_convnext,
    _split_densenet,
    _split_features_classifier,
    _split_features_mlp,
    _split_maxvit,
    _split_mnasnet,
    _split_named_trunk,
    _split_regnet,
    _split_resnet,
    _split_shufflenet,
    _split_swin,
    _split_vit,
)


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    _REGISTRY[arch.name] = arch
    return arch


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
