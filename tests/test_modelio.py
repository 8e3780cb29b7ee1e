"""Checkpoint layouts, strict loading with useful errors, model folders and the adapter."""

from __future__ import annotations

import pytest
import torch
import torchvision

from spuraudit.modelio import (
    CheckpointError,
    ModelCard,
    UntrustedPickleError,
    build_audit_model,
    import_checkpoint,
    load_model,
    read_checkpoint,
    weights_hash,
)


class NotATensor:
    """A custom object: makes a checkpoint need full pickle loading."""

    def __init__(self):
        self.value = 3


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3).state_dict()


def _card(arch="torchvision:resnet18", n=3, **kw):
    return ModelCard(name="m", architecture=arch, class_names=[f"c{i}" for i in range(n)], input_size=[64, 64], **kw)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "best_prec1": 91.0},
    ],
    ids=["plain", "state_dict", "model", "module-prefix", "wrapped-model-prefix"],
)
def test_layouts_load_to_identical_weights(tmp_path, resnet18_state, wrap):
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(resnet18_state), path)
    ckpt = read_checkpoint(path)
    model = build_audit_model(_card(), ckpt.state_dict, path)
    for key, value in resnet18_state.items():
        assert torch.equal(model.network.state_dict()[key], value)


def test_robustness_layout_reads_normaliser(tmp_path, resnet18_state):
    state = {f"module.model.{k}": v for k, v in resnet18_state.items()}
    state.update({f"module.attacker.model.{k}": v for k, v in resnet18_state.items()})
    state["module.normalizer.new_mean"] = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    state["module.normalizer.new_std"] = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    path = tmp_path / "robust.pt"
    torch.save({"model": state, "epoch": 90}, path)
    card = _card(mean=[0.0] * 3, std=[1.0] * 3)
    model, card = import_checkpoint(path, card, tmp_path / "models" / "robust")
    assert card.mean == pytest.approx([0.485, 0.456, 0.406])
    assert card.std == pytest.approx([0.229, 0.224, 0.225])
    reloaded, card2 = load_model(tmp_path / "models" / "robust")
    assert weights_hash(reloaded) == weights_hash(model)
    assert torch.allclose(reloaded.normalize.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_safetensors(tmp_path, resnet18_state):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_state.items()}, str(path))
    model = build_audit_model(_card(), read_checkpoint(path).state_dict)
    assert torch.equal(model.head.weight, resnet18_state["fc.weight"])


def test_wrong_number_of_classes_lists_shape_mismatch(tmp_path, resnet18_state):
    path = tmp_path / "ckpt.pt"
    torch.save(resnet18_state, path)
    with pytest.raises(CheckpointError) as err:
        build_audit_model(_card(n=5), read_checkpoint(path).state_dict, path)
    text = str(err.value)
    assert "fc.weight: checkpoint (3, 512) vs model (5, 512)" in text
    assert "ckpt.pt" in text


def test_wrong_architecture_lists_missing_and_unexpected_keys(tmp_path, resnet18_state):
    path = tmp_path / "ckpt.pt"
    torch.save(resnet18_state, path)
    with pytest.raises(CheckpointError) as err:
        build_audit_model(_card(arch="spuraudit:digitnet"), read_checkpoint(path).state_dict, path)
    text = str(err.value)
    assert "missing keys" in text and "unexpected keys" in text and "conv1.weight" in text and "features.0.weight" in text
    assert "more" in text  # long lists are cut, with a count


def test_untrusted_pickle_refused_then_accepted_when_trusted(tmp_path, resnet18_state):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": resnet18_state, "extra": NotATensor()}, path)
    with pytest.raises(UntrustedPickleError) as err:
        read_checkpoint(path)
    assert "pickled.pt" in str(err.value) and "trust" in str(err.value)
    ckpt = read_checkpoint(path, trust_pickle=True)
    assert "fc.weight" in ckpt.state_dict


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "missing.pt")


def test_adapter_pieces_agree_with_the_network(resnet18_state):
    model = build_audit_model(_card(), resnet18_state)
    x = torch.rand(2, 3, 64, 64)
    fmap, feats, logits = model.forward_all(x)
    assert fmap.shape == (2, 512, 2, 2)
    assert torch.allclose(feats, fmap.mean(dim=(2, 3)))
    normalised = (x - model.normalize.mean) / model.normalize.std
    with torch.no_grad():
        assert torch.allclose(logits, model.network(normalised), atol=1e-5)


@pytest.mark.parametrize("name", ["torchvision:convnext_tiny", "torchvision:efficientnet_b0",
                                  "torchvision:densenet121", "torchvision:regnet_y_400mf"])
def test_other_torchvision_families_split_consistently(name):
    torch.manual_seed(0)
    model = build_audit_model(_card(arch=name))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        _, feats, logits = model.forward_all(x)
        expected = model.network((x - model.normalize.mean) / model.normalize.std)
    assert feats.shape[1] == model.num_features
    assert torch.allclose(logits, expected, atol=1e-4)
