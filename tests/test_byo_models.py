"""Architectures users bring: every torchvision classifier, ViT, timm, TorchScript; checkpoint inspection."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn

from spuraudit.modelio import (
    CheckpointError,
    ModelCard,
    UntrustedPickleError,
    build_audit_model,
    load_model,
)
from spuraudit.modelio.adapter import GlobalAveragePool
from spuraudit.modelio import load_model
from spuraudit.modelio.importing import import_model
from spuraudit.modelio.inspection import summarize_checkpoint
from spuraudit.modelio.registry import UnknownArchitecture, get_architecture, torchvision_model_names

# torch.jit.script/trace/save warn that TorchScript is deprecated; users still bring such files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

# Building and running the largest torchvision models (200-650 M parameters) takes minutes on a small
# CPU; their families are covered by smaller members, which all run. SPURAUDIT_TEST_GIANT_MODELS=1 runs them too.
GIANT_PARAMETERS = 150e6
RUN_GIANTS = os.environ.get("SPURAUDIT_TEST_GIANT_MODELS") == "1"


def _num_params(name: str) -> float:
    return torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]


def _torchvision_params():
    for name in torchvision_model_names():
        marks = []
        if _num_params(name) > GIANT_PARAMETERS and not RUN_GIANTS:
            marks.append(pytest.mark.skip(reason=f"{_num_params(name) / 1e6:.0f} M parameters: too slow for CPU tests"))
        yield pytest.param(name, marks=marks, id=name)


def _logits_match(net: nn.Module, split, size: int):
    torch.manual_seed(1)
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        expected = net(x)
        fmap = split.trunk(x)
        feats = (split.pool or GlobalAveragePool())(fmap)
        got = split.head(feats)
    return fmap, feats, expected, got


@pytest.mark.parametrize("name", list(_torchvision_params()))
def test_every_torchvision_classifier_splits_into_its_own_logits(name):
    arch = get_architecture(f"torchvision:{name}")
    torch.manual_seed(0)
    net = arch.build(3).eval()
    if name.startswith("squeezenet"):
        with pytest.raises(UnknownArchitecture, match="not a linear function"):
            arch.split(net)
        return
    split = arch.split(net)
    assert isinstance(split.head, nn.Linear) and split.head.out_features == 3
    fmap, feats, expected, got = _logits_match(net, split, arch.min_input_size)
    assert fmap.ndim == 4 and feats.shape == (1, split.head.in_features)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    # Every parameter of the network is reachable from the adapter (so .to(), optimisers and
    # freezing see the whole model).
    reachable = {id(p) for m in (split.trunk, split.pool, split.head) if m is not None for p in m.parameters()}
    assert {id(p) for p in net.parameters()} <= reachable


def test_minimum_sizes_are_real_minimums():
    """The family minimums are where the networks really stop working (one size below fails)."""
    for name, size in [("alexnet", 63), ("inception_v3", 75)]:
        arch = get_architecture(f"torchvision:{name}")
        assert arch.min_input_size == size
        net = arch.build(2).eval()
        with pytest.raises(RuntimeError), torch.no_grad():
            net(torch.rand(1, 3, size - 1, size - 1))


def test_vit_feature_map_is_the_patch_grid_and_pool_is_the_class_token():
    arch = get_architecture("torchvision:vit_b_32")
    net = arch.build(4).eval()
    model = build_audit_model(ModelCard(name="v", architecture="torchvision:vit_b_32",
                                        class_names=list("abcd"), input_size=[224, 224]))
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        fmap, feats, logits = model.forward_all(x)
        expected = model.network(model.normalize(x))
    assert fmap.shape == (2, 768, 7, 7)  # 224 / 32 = 7 patches a side, class token dropped
    assert feats.shape == (2, 768)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert not torch.allclose(feats, fmap.mean(dim=(2, 3)))  # r is the class token, not a channel average
    # Gradients reach the feature map (CAMs need them); after the last block they would be zero.
    fmap = model.feature_map(x[:1])
    fmap.retain_grad()
    model.pool(fmap).square().sum().backward()  # (torchvision initialises ViT heads to zero)
    assert fmap.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="class token"):
        model.pool(fmap.detach().clone())
    with pytest.raises(ValueError, match="224×224"):
        model.feature_map(torch.rand(1, 3, 64, 64))
    assert arch.fixed_input_size and arch.min_input_size == 224 and net is not None


def test_googlenet_file_with_auxiliary_heads_imports(tmp_path):
    """torchvision's GoogLeNet files carry aux1/aux2; they are dropped, the rest loads strictly."""
    torch.manual_seed(0)
    full = torchvision.models.googlenet(weights=None, num_classes=3, aux_logits=True, init_weights=True)
    path = tmp_path / "googlenet.pt"
    torch.save(full.state_dict(), path)
    card = ModelCard(name="g", architecture="torchvision:googlenet", class_names=list("abc"), input_size=[64, 64],
                     mean=[0.5] * 3, std=[0.5] * 3)
    model, card = import_model(path, card, tmp_path / "models" / "g")
    assert any("auxiliary" in n for n in card.notes)
    assert torch.equal(model.head.weight, full.fc.weight)
    assert get_architecture("torchvision:googlenet").default_mean == (0.5, 0.5, 0.5)


# ---- checkpoint inspection: head size, wrong architecture, trust ----------------------------------------
class NotATensor:
    def __init__(self):
        self.value = 1


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in torchvision.models.resnet18(num_classes=7).state_dict().items()}}, path)
    return path


def test_head_size_read_from_the_checkpoint(resnet18_file):
    summary = summarize_checkpoint(resnet18_file, "torchvision:resnet18")
    assert summary.num_classes == 7 and summary.head_key == "fc.weight" and summary.fit_error is None
    assert summarize_checkpoint(resnet18_file, None).num_classes == 7  # last linear weight, no architecture


def test_backbone_only_checkpoint_is_recognised(tmp_path):
    state = torchvision.models.resnet18(num_classes=7).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "backbone.pt"
    torch.save(state, path)
    summary = summarize_checkpoint(path, "torchvision:resnet18")
    assert summary.backbone_only and summary.fit_error is None
    assert any("linear-probe" in n for n in summary.notes)


def test_wrong_architecture_is_reported_with_the_mismatched_keys(resnet18_file):
    summary = summarize_checkpoint(resnet18_file, "torchvision:resnet50")
    assert summary.fit_error and "shape mismatches" in summary.fit_error and "layer1.0.conv1.weight" in summary.fit_error
    summary = summarize_checkpoint(resnet18_file, "spuraudit:cifar_resnet20")
    assert summary.fit_error and "unexpected keys" in summary.fit_error
    with pytest.raises(CheckpointError, match="does not fit"):
        import_model(resnet18_file, ModelCard(name="x", architecture="torchvision:resnet50",
                                              class_names=[str(i) for i in range(7)]), resnet18_file.parent / "x")


def test_untrusted_pickle_is_refused_with_the_reason_then_accepted_with_trust(tmp_path):
    state = torchvision.models.resnet18(num_classes=2).state_dict()
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": state, "extra": NotATensor()}, path)
    summary = summarize_checkpoint(path, "torchvision:resnet18")
    assert summary.needs_trust and "pickled.pt" in summary.refusal and "trust" in summary.refusal
    card = ModelCard(name="p", architecture="torchvision:resnet18", class_names=["a", "b"], input_size=[32, 32])
    with pytest.raises(UntrustedPickleError):
        import_model(path, card, tmp_path / "models" / "p")
    assert not (tmp_path / "models" / "p").exists()
    trusted = summarize_checkpoint(path, "torchvision:resnet18", trust_pickle=True)
    assert trusted.readable and trusted.num_classes == 2
    model, _ = import_model(path, card, tmp_path / "models" / "p", trust_pickle=True)
    reloaded, _ = load_model(tmp_path / "models" / "p")  # stored as a plain state dict: no trust needed now
    assert torch.equal(reloaded.head.weight, model.head.weight)


# ---- timm ---------------------------------------------------------------------------------------------
def _timm_or_skip():
    """timm is optional: its tests skip without it, the rest of this file runs."""
    return pytest.importorskip("timm")


@pytest.mark.parametrize("name, size, fmap_shape", [
    ("resnet10t", 64, (1, 512, 2, 2)),
    ("vit_tiny_patch16_224", 224, (1, 192, 14, 14)),
])
def test_timm_models_split_into_their_own_logits(name, size, fmap_shape):
    _timm_or_skip()
    arch = get_architecture(f"timm:{name}")
    torch.manual_seed(0)
    net = arch.build(5).eval()
    split = arch.split(net)
    fmap, feats, expected, got = _logits_match(net, split, size)
    assert tuple(fmap.shape) == fmap_shape
    assert torch.allclose(got, expected, atol=1e-4)
    reachable = {id(p) for m in (split.trunk, split.pool, split.head) for p in m.parameters()}
    assert {id(p) for p in net.parameters()} <= reachable


def test_timm_model_imports_from_a_checkpoint(tmp_path):
    timm_ = _timm_or_skip()
    net = timm_.create_model("resnet10t", pretrained=False, num_classes=3)
    path = tmp_path / "timm.pt"
    torch.save(net.state_dict(), path)
    assert summarize_checkpoint(path, "timm:resnet10t").num_classes == 3
    card = ModelCard(name="t", architecture="timm:resnet10t", class_names=list("abc"), input_size=[64, 64])
    model, _ = import_model(path, card, tmp_path / "models" / "t")
    reloaded, _ = load_model(tmp_path / "models" / "t")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), net.eval()(reloaded.normalize(x)), atol=1e-5)


# ---- TorchScript ---------------------------------------------------------------------------------------
class TinyNet(nn.Module):
    """A model spuraudit has never heard of: the user must name its feature layer and head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.classify = nn.Linear(16, 4)

    def forward(self, x):
        return self.classify(self.body(self.stem(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_known_layout_found_and_verified(tmp_path, how):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    example = torch.rand(1, 3, 64, 64)
    scripted = torch.jit.script(net) if how == "script" else torch.jit.trace(net, example)
    path = tmp_path / "model.pt"
    torch.jit.save(scripted, str(path))
    card = ModelCard(name="ts", architecture="torchscript", class_names=list("abc"), input_size=[64, 64])
    model, card = import_model(path, card, tmp_path / "models" / "ts")
    assert card.options["layout"] == "resnet"
    reloaded, card2 = load_model(tmp_path / "models" / "ts")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fmap, feats, logits = reloaded.forward_all(x)
        assert fmap.shape == (2, 512, 2, 2)
        assert torch.allclose(logits, net(reloaded.normalize(x)), atol=1e-4)
    assert reloaded.head.weight.data_ptr() == reloaded.network.fc.weight.data_ptr()  # shared, not copied


def test_torchscript_unknown_layout_needs_named_layers(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(TinyNet().eval()), str(path))
    card = ModelCard(name="tiny", architecture="torchscript", class_names=list("abcd"), input_size=[16, 16])
    with pytest.raises(CheckpointError) as err:
        import_model(path, card, tmp_path / "models" / "tiny")
    assert "feature_layer" in str(err.value) and "['stem', 'body', 'classify']" in str(err.value)
    card.options = {"feature_layer": "body", "head": "classify"}
    model, _ = import_model(path, card, tmp_path / "models" / "tiny")
    assert model.num_features == 16 and model.num_classes == 4
    wrong = ModelCard(name="t2", architecture="torchscript", class_names=list("abcd"), input_size=[16, 16],
                      options={"feature_layer": "stem", "head": "classify"})
    with pytest.raises(CheckpointError):  # 8 channels cannot feed a 16-input head: refused, not guessed
        import_model(path, wrong, tmp_path / "models" / "t2")
    summary = summarize_checkpoint(path, "torchscript", options={"feature_layer": "body"}, input_size=(16, 16))
    assert summary.num_classes == 4


def test_state_dict_is_not_torchscript(tmp_path, resnet18_file):
    card = ModelCard(name="ts", architecture="torchscript", class_names=list("abc"))
    with pytest.raises(CheckpointError, match="not a TorchScript file"):
        import_model(resnet18_file, card, tmp_path / "models" / "ts")


def test_a_plugin_module_registers_a_custom_architecture(tmp_path, monkeypatch):
    """$SPURAUDIT_PLUGINS names modules that register architectures; every process that reads a card finds them."""
    import subprocess
    import sys

    from spuraudit.modelio import registry

    (tmp_path / "mylab_archs.py").write_text(
        "from torch import nn\n"
        "from spuraudit.modelio.registry import Architecture, Split, register\n"
        "class Tiny(nn.Module):\n"
        "    def __init__(self, n):\n"
        "        super().__init__(); self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()); self.fc = nn.Linear(8, n)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.features(x).mean((2, 3)))\n"
        "register(Architecture(name='mylab:tiny', build=Tiny, split=lambda net: Split(trunk=net.features, head=net.fc),\n"
        "                      default_input_size=(16, 16)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SPURAUDIT_PLUGINS", "mylab_archs")
    assert registry.get_architecture("mylab:tiny").default_input_size == (16, 16)
    assert "mylab:tiny" in registry.list_architectures()
    # a fresh process (as a job worker is) finds it through the variable alone
    code = "from spuraudit.modelio.registry import get_architecture; print(get_architecture('mylab:tiny').name)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert out.stdout.strip() == "mylab:tiny", out.stderr

    monkeypatch.setenv("SPURAUDIT_PLUGINS", "no_such_module_here")
    with pytest.raises(registry.UnknownArchitecture, match="no_such_module_here"):
        registry.get_architecture("mylab:other")
