"""TorchScript models: a scripted or traced network saved with `torch.jit.save`, audited without its source.

How the split is found, in order:

1. `options.feature_layer` (and optionally `options.head`) in the model card: the trunk runs the
   network's submodules in registration order up to and including `feature_layer` (a dotted path such as
   `features` or `backbone.layer4` walks into containers), the pool is a global average, the head is the
   named submodule (default: the last submodule with a 2-D `weight`).
2. Otherwise the known torchvision layouts (ResNet, DenseNet, EfficientNet, VGG, ...), tried in turn.

Whatever is chosen is accepted only when `head(pool(trunk(x)))` reproduces the network's own output on a
random input of the card's size. Limits: the trunk must be a plain chain of submodules (code in the
original `forward` between them, such as a `torch.flatten` in the middle or a skip connection across
top-level modules, is not replayed and makes the check fail); the head must be a linear layer (its
weights are shared with the scripted module, not copied); hooks cannot be placed inside a scripted module,
so CAMs use the trunk's output. Loading a TorchScript file runs TorchScript code from it (a restricted
language without Python imports), so only load files from sources you trust.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .adapter import AuditModel, GlobalAveragePool
from .checkpoint import CheckpointError, fit_state_dict, read_checkpoint
from .architecture import Split, UnknownArchitecture

# Named weights.* so that caches keyed on the weights file (the project's model hash) see it.
SCRIPT_FILE = "weights.torchscript.pt"


def load_torchscript_network(path: str | Path) -> torch.jit.ScriptModule:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    try:
        with warnings.catch_warnings():
            # PyTorch marks TorchScript as deprecated; users still have such files, and loading them is the point.
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError and others on files that are not TorchScript
        raise CheckpointError(
            f"{path}: not a TorchScript file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Save one with torch.jit.save(torch.jit.script(model), path), or choose the model's architecture "
            "and give its state dict instead."
        ) from None
    return net.eval()


def _child(module: nn.Module, dotted: str) -> nn.Module:
    current = module
    for part in dotted.split("."):
        names = [n for n, _ in current.named_children()]
        if part not in names:
            raise CheckpointError(
                f"TorchScript model has no submodule '{dotted}' ('{part}' is not among {names})."
            )
        current = getattr(current, part)
    return current


def _chain_until(module: nn.Module, parts: list[str]) -> list[nn.Module]:
    """Children of `module` in order, up to and including `parts[0]`, descending into it for the rest."""
    chain: list[nn.Module] = []
    for name, child in module.named_children():
        if name == parts[0]:
            return chain + ([child] if len(parts) == 1 else _chain_until(child, parts[1:]))
        chain.append(child)
    raise CheckpointError(
        f"TorchScript model: no submodule '{parts[0]}' (children: {[n for n, _ in module.named_children()]})."
    )


def as_linear(module: nn.Module, name: str = "head") -> nn.Linear:
    """An `nn.Linear` sharing the weight and bias Parameters of a (scripted) linear layer."""
    if isinstance(module, nn.Linear):
        return module
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise CheckpointError(
            f"TorchScript model: '{name}' is not a linear layer (needs a 2-D weight [classes, features])."
        )
    bias = getattr(module, "bias", None)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    linear.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
    if bias is not None:
        linear.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias)
    return linear


def _last_linear_name(net: nn.Module) -> str:
    names = [n for n, m in net.named_modules() if n and isinstance(getattr(m, "weight", None), torch.Tensor)
             and getattr(m, "weight").ndim == 2]
    if not names:
        raise CheckpointError("TorchScript model: found no linear layer to use as the head; name it in options.head.")
    return names[-1]


def _named_split(net: nn.Module, options: dict) -> Split:
    layer = str(options["feature_layer"])
    head_name = str(options.get("head") or _last_linear_name(net))
    trunk = nn.Sequential(*_chain_until(net, layer.split(".")))
    return Split(trunk=trunk, head=as_linear(_child(net, head_name), head_name), pool=GlobalAveragePool())


def _known_layout_splits():
    from . import splits as registry

    return [
        ("resnet", registry._split_resnet),
        ("regnet", registry._split_regnet),
        ("densenet", registry._split_densenet),
        ("features+classifier", registry._split_features_classifier),
        ("features+mlp", registry._split_features_mlp),
        ("convnext", registry._split_convnext),
        ("shufflenet", registry._split_shufflenet),
        ("mnasnet", registry._split_mnasnet),
        ("swin", registry._split_swin),
        ("spuraudit:cifar_resnet", _split_cifar_like),
        ("spuraudit:digitnet", lambda net: Split(trunk=net.features, head=net.fc)),
    ]


def _split_cifar_like(net: nn.Module) -> Split:
    from .cifar_resnet import split_cifar_resnet

    return split_cifar_resnet(net)


def split_difference(net: nn.Module, split: Split, input_size=(224, 224)) -> float:
    """Largest |logit difference| between the split and the network on one random input, relative to
    the logits' scale (1 + max |logit|)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, *input_size, generator=generator)
    pool = split.pool if split.pool is not None else GlobalAveragePool()
    with torch.no_grad():
        expected = net(x)
        got = split.head(pool(split.trunk(x)))
    if not isinstance(expected, torch.Tensor) or expected.shape != got.shape:
        return float("inf")
    return float((expected - got).abs().max() / (1.0 + expected.abs().max()))


def split_torchscript(net: nn.Module, options: dict, input_size=(224, 224), tolerance: float = 1e-3) -> Split:
    """The verified split of a TorchScript network (see the module docstring); records the layout in `options`."""
    if options.get("feature_layer"):
        candidates = [("named", lambda n: _named_split(n, options))]
    elif options.get("layout"):
        candidates = [c for c in _known_layout_splits() if c[0] == options["layout"]]
    else:
        candidates = _known_layout_splits()
    tried = []
    for layout, make in candidates:
        try:
            split = make(net)
            split = Split(trunk=split.trunk, head=as_linear(split.head), pool=split.pool)
            diff = split_difference(net, split, input_size)
        except (AttributeError, UnknownArchitecture, IndexError, TypeError, RuntimeError, KeyError) as exc:
            tried.append(f"{layout}: {type(exc).__name__}")
            continue
        except CheckpointError:
            if layout == "named":
                raise
            continue
        if diff <= tolerance:
            if layout != "named":
                options["layout"] = layout
            return split
        tried.append(f"{layout}: logits differ by {diff:.3g}")
    children = [n for n, _ in net.named_children()]
    raise CheckpointError(
        "TorchScript model: could not find a feature map and a linear head that reproduce its output "
        f"(tried {'; '.join(tried) or 'nothing'}). Name them in the model card: options: {{feature_layer: <the "
        f"submodule whose output is the last feature map>, head: <the final linear layer>}}. Its top-level "
        f"submodules are {children}. The code between the two must be a global average pool."
    )


def build_torchscript_model(script_path: str | Path, mean, std, options: dict, input_size, weights: str | Path | None = None) -> AuditModel:
    """Load, optionally overwrite its weights with a state dict, split and wrap a TorchScript network."""
    net = load_torchscript_network(script_path)
    if weights is not None and Path(weights).resolve() != Path(script_path).resolve():
        fit_state_dict(net, read_checkpoint(weights).state_dict, weights)
    split = split_torchscript(net, options, tuple(input_size))
    model = AuditModel(split.trunk, split.head, mean, std, pool=split.pool)
    object.__setattr__(model, "network", net)
    return model.eval()


def script_path_of(folder: str | Path, card) -> Path:
    """Where a torchscript card's network lives: `options.script`, relative to the model folder or absolute."""
    name = card.options.get("script") or card.weights
    path = Path(name)
    return path if path.is_absolute() else Path(folder) / path


def load_torchscript_model(folder: str | Path, card) -> AuditModel:
    """`load_model` for cards whose architecture is `torchscript`.

    The folder's weights file is either the TorchScript archive itself, or (for models derived from one,
    e.g. by a mitigation that saved a state dict) a state dict applied to the archive named in
    `options.script`.
    """
    folder = Path(folder)
    script = script_path_of(folder, card)
    if not script.is_file():
        raise CheckpointError(
            f"{folder}: the TorchScript file {script} named by the model card is missing; copy it back or "
            "re-import the model."
        )
    return build_torchscript_model(script, card.mean, card.std, dict(card.options), card.input_size, folder / card.weights)
