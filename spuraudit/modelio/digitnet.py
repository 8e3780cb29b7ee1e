"""The demo's small CNN: fast enough to train on two CPU cores in under a minute."""

from __future__ import annotations

from torch import nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DigitNet(nn.Module):
    """28×28 RGB -> 7×7×`width*4` feature map -> global average -> linear head.

    The last stage ends in a ReLU so its channels are non-negative neural features, as in a ResNet.
    """

    def __init__(self, num_classes: int = 2, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            *_block(3, width),
            *_block(width, width),
            nn.MaxPool2d(2),
            *_block(width, 2 * width),
            *_block(2 * width, 2 * width),
            nn.MaxPool2d(2),
            *_block(2 * width, 4 * width),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))
