"""The checkpoint step proposes the architecture whose tensor names and shapes match the file."""

from __future__ import annotations

import pytest
import torch

from spuraudit.modelio.inspection import match_architecture, suggest_architectures, summarize_checkpoint
from spuraudit.modelio.registry import get_architecture

from .conftest import SHARED_DATA

CIFAR_RESNET20 = SHARED_DATA / "cifar10-resnet" / "resnet20-12fca82f.th"


def _state(name: str, num_classes: int) -> dict[str, torch.Tensor]:
    return get_architecture(name).build(num_classes).state_dict()


def test_a_cifar_resnet_file_is_matched_to_its_own_depth_first():
    state = _state("spuraudit:cifar_resnet32", 7)
    names = ["torchvision:resnet18", "spuraudit:cifar_resnet20", "spuraudit:cifar_resnet32",
             "spuraudit:cifar_resnet56", "spuraudit:digitnet"]
    ranked = suggest_architectures(state, names=names)
    assert ranked[0].architecture == "spuraudit:cifar_resnet32"
    assert ranked[0].exact and ranked[0].head_found and ranked[0].num_classes == 7
    assert [m.score for m in ranked] == sorted((m.score for m in ranked), reverse=True)
    assert all(m.score < 1 for m in ranked[1:])


def test_head_found_is_judged_per_candidate():
    state = _state("torchvision:resnet18", 3)
    with_head = match_architecture("torchvision:resnet18", state)
    assert with_head.head_found and with_head.num_classes == 3 and with_head.exact
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    without = match_architecture("torchvision:resnet18", backbone)
    assert not without.head_found and without.num_classes is None
    assert without.matched == without.file_tensors  # everything the file has still fits
    # another network's head is not this one's: resnet50's fc takes 2048 inputs, resnet18's 512
    assert not match_architecture("torchvision:resnet50", state).head_found


def test_a_state_dict_of_nothing_known_gets_no_suggestion():
    state = {"foo.weight": torch.zeros(3, 3), "bar.bias": torch.zeros(3)}
    assert suggest_architectures(state, names=["spuraudit:digitnet", "spuraudit:cifar_resnet20"]) == []


@pytest.mark.skipif(not CIFAR_RESNET20.is_file(), reason="shared CIFAR ResNet-20 checkpoint absent")
def test_the_real_cifar_resnet20_file_under_the_wrong_architecture():
    summary = summarize_checkpoint(CIFAR_RESNET20, "torchvision:resnet50")
    assert summary.fit_error and summary.layout_mismatch
    assert not summary.backbone_only  # the file has a head: no advice to use linear-probe mode
    assert not any("backbone" in note for note in summary.notes)
    from spuraudit.modelio.inspection import suggest_for_file

    ranked = suggest_for_file(CIFAR_RESNET20)
    assert ranked[0].architecture == "spuraudit:cifar_resnet20"
    assert ranked[0].exact and ranked[0].head_found and ranked[0].num_classes == 10
