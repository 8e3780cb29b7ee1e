"""The CIFAR ResNet family, and a real third-party model through the same path a user takes.

The real-data tests use the published CIFAR-10 ResNet checkpoints and the CIFAR-10 test set (JPEG copy)
from the shared data folder and skip cleanly without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spuraudit.modelio import ModelCard, build_audit_model, load_model, read_checkpoint
from spuraudit.modelio.cifar_resnet import CIFAR_RESNET_DEPTHS, CifarResNet
from spuraudit.create import create_project

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_TEST = SHARED / "cifar10" / "test"
RESNETS = SHARED / "cifar10-resnet"
CHECKPOINTS = {20: "resnet20-12fca82f.th", 56: "resnet56-4bfd9763.th"}
CIFAR_MEAN, CIFAR_STD = "0.485,0.456,0.406", "0.229,0.224,0.225"

needs_shared = pytest.mark.skipif(not (CIFAR_TEST.is_dir() and RESNETS.is_dir()),
                                  reason="shared CIFAR-10 data and checkpoints not present")


def _card(depth: int, n: int = 10) -> ModelCard:
    return ModelCard(name=f"r{depth}", architecture=f"spuraudit:cifar_resnet{depth}",
                     class_names=[f"c{i}" for i in range(n)], input_size=[32, 32])


@pytest.mark.parametrize("depth", CIFAR_RESNET_DEPTHS)
def test_block_counts_and_parameter_free_shortcuts(depth):
    net = CifarResNet(depth, 10)
    n = (depth - 2) // 6
    assert [len(net.layer1), len(net.layer2), len(net.layer3)] == [n, n, n]
    # Every tensor is a conv, BN or the head: option-A shortcuts add no keys.
    assert not any("shortcut" in k for k in net.state_dict())
    # 6n + 2 weighted layers: the stem, 2 convs per block, the linear head.
    convs = [k for k in net.state_dict() if k.endswith("conv1.weight") or k.endswith("conv2.weight")]
    assert len(convs) + 1 == 6 * n + 2


def test_published_layout_round_trip(tmp_path):
    """A random ResNet-20 saved exactly as the published files are ({'best_prec1', 'state_dict'} with
    'module.' keys) loads back with identical weights and outputs."""
    torch.manual_seed(0)
    net = CifarResNet(20, 10).eval()
    path = tmp_path / "resnet20.th"
    torch.save({"best_prec1": 91.0, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = build_audit_model(_card(20), read_checkpoint(path).state_dict, path)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        fmap, feats, logits = model.forward_all(x)
        expected = net(model.normalize(x))
    assert fmap.shape == (3, 64, 8, 8) and feats.shape == (3, 64)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.allclose(feats, fmap.mean(dim=(2, 3)))


def test_option_a_shortcut_zero_pads_channels():
    from spuraudit.modelio.cifar_resnet import ZeroPadShortcut

    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).view(2, 16, 4, 4)
    out = ZeroPadShortcut(16, 32, 2)(x)
    assert out.shape == (2, 32, 2, 2)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


@needs_shared
@pytest.mark.parametrize("depth", sorted(CHECKPOINTS))
def test_real_checkpoints_load_as_they_are(depth):
    path = RESNETS / CHECKPOINTS[depth]
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == {"best_prec1", "state_dict"}
    model = build_audit_model(_card(depth), read_checkpoint(path).state_dict, path)  # strict: every key matches
    assert model.num_features == 64 and model.num_classes == 10


def _cifar_subset(dest: Path, per_class: int) -> Path:
    """The first `per_class` test images of each class, copied (the dataset reader skips symlinks)."""
    for cls in sorted(p for p in CIFAR_TEST.iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True)
        for f in sorted(cls.glob("*.jpg"))[:per_class]:
            shutil.copyfile(f, dest / cls.name / f.name)
    return dest


@needs_shared
def test_resnet20_on_real_cifar10_through_create_project(tmp_path):
    data = _cifar_subset(tmp_path / "cifar-subset", 50)
    project = create_project("cifar", str(data), "", "spuraudit:cifar_resnet20", str(RESNETS / CHECKPOINTS[20]),
                             32, CIFAR_MEAN, CIFAR_STD, False, base=tmp_path / "home")
    assert project.table.class_names[:3] == ["airplane", "automobile", "bird"]
    store = project.extract(num_workers=0, batch_size=250)
    accuracy = 100 * float((np.asarray(store.preds) == project.table.labels).mean())
    # Published: 91.73 % on the lossless test set. This copy is JPEG quality 75 with 4:2:0 chroma
    # subsampling, which costs about 10 points (81.0 % measured on all 10,000 images).
    assert accuracy >= 72, accuracy
    model, card = load_model(project.model_folder)
    assert card.architecture == "spuraudit:cifar_resnet20" and card.input_size == [32, 32]


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SPURAUDIT_FULL_CIFAR") != "1",
                    reason="full 10,000-image measurement: set SPURAUDIT_FULL_CIFAR=1 (minutes on a CPU)")
@needs_shared
@pytest.mark.parametrize("depth", sorted(CHECKPOINTS))
def test_full_cifar10_accuracy(depth, tmp_path):
    """Prints the accuracy of the published checkpoints on all 10,000 JPEG test images."""
    project = create_project(f"cifar-full-{depth}", str(CIFAR_TEST), "", f"spuraudit:cifar_resnet{depth}",
                             str(RESNETS / CHECKPOINTS[depth]), 32, CIFAR_MEAN, CIFAR_STD, False,
                             base=tmp_path / "home")
    assert len(project.table) == 10_000
    store = project.extract(batch_size=500)
    accuracy = 100 * float((np.asarray(store.preds) == project.table.labels).mean())
    print(f"\nResNet-{depth}: {accuracy:.2f} % on the 10,000 CIFAR-10 test JPEGs")
    assert accuracy >= 75
