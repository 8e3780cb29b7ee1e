"""ResNets for 32×32 CIFAR images (He et al. 2016, section 4.2), in the layout of the widely shared checkpoints.

Structure: a 3×3 stem with 16 channels, three stages of 16/32/64 channels with n = (depth − 2) / 6 basic
blocks each (stride 2 at the start of stages 2 and 3), global average pool, a `linear` head. Shortcuts that
change shape are parameter-free ("option A"): subsample by 2 and zero-pad the new channels.

Module names (`conv1`, `bn1`, `layer1.0.conv1`, ..., `linear`) match the published checkpoints, so their
state dicts load as they are (after `module.` is stripped, which `read_checkpoint` does). Option-A
shortcuts hold no parameters, so they add no keys.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .architecture import Split

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)
STAGE_CHANNELS = (16, 32, 64)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: keep every `stride`-th pixel and zero-pad the extra channels on both sides."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dimensions first: (w, w, h, h, channels, channels).
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """x [B, 3, H, W] (normalised) -> logits [B, num_classes]; feature map = `layer3` output [B, 64, H/4, W/4]."""

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}.")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, STAGE_CHANNELS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0])
        self.relu = nn.ReLU()
        in_channels = STAGE_CHANNELS[0]
        stages = []
        for i, channels in enumerate(STAGE_CHANNELS):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(BasicBlock(in_channels, channels, stride))
                in_channels = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(STAGE_CHANNELS[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))


def build_cifar_resnet(depth: int, num_classes: int) -> CifarResNet:
    return CifarResNet(depth, num_classes)


def split_cifar_resnet(net: CifarResNet) -> Split:
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.layer1, net.layer2, net.layer3)
    return Split(trunk=trunk, head=net.linear)
