"""User CNN classifiers written only for the tests, registered nowhere.

They are laid out unlike the zoo on purpose, so the network view has to find
their layers, residual blocks and channel groups by tracing alone.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def plain_chain(in_channels: int = 3, num_classes: int = 7) -> nn.Sequential:
    """A flat nn.Sequential with its own names; the classifier reads a flattened 4x4 map (no global pool).

    Expects 16x16 inputs. ``conv_c`` has a bias and no BatchNorm.
    """
    return nn.Sequential(
        OrderedDict(
            [
                ("stem", nn.Conv2d(in_channels, 12, 3, padding=1, bias=False)),
                ("stem_norm", nn.BatchNorm2d(12)),
                ("stem_act", nn.ReLU()),
                ("conv_a", nn.Conv2d(12, 12, 3, padding=1, bias=False)),
                ("norm_a", nn.BatchNorm2d(12)),
                ("act_a", nn.ReLU()),
                ("pool_1", nn.MaxPool2d(2)),
                ("conv_b", nn.Conv2d(12, 24, 3, padding=1, bias=False)),
                ("norm_b", nn.BatchNorm2d(24)),
                ("act_b", nn.ReLU()),
                ("conv_c", nn.Conv2d(24, 16, 3, padding=1)),
                ("act_c", nn.LeakyReLU(0.1)),
                ("pool_2", nn.MaxPool2d(2)),
                ("flat", nn.Flatten()),
                ("hidden", nn.Linear(16 * 4 * 4, 32)),
                ("hidden_act", nn.ReLU()),
                ("drop", nn.Dropout(0.2)),
                ("logits", nn.Linear(32, num_classes)),
            ]
        )
    )


class TwinConvUnit(nn.Module):
    """Residual unit: ``relu(skip(x) + body(x))``, the shortcut written first, a functional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.skip is None else self.skip(x)
        return F.relu(shortcut + self.body(x))


class SmallResidualNet(nn.Module):
    """Stem, functional max pool, two stages of TwinConvUnits (identity and projection
    shortcuts), one residual sum written in this forward, functional global pooling."""

    def __init__(self, in_channels: int = 3, num_classes: int = 5, width: int = 12) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stages = nn.ModuleList(
            [
                nn.Sequential(TwinConvUnit(width, width), TwinConvUnit(width, width)),
                nn.Sequential(TwinConvUnit(width, 2 * width, stride=2), TwinConvUnit(2 * width, 2 * width)),
            ]
        )
        self.refine = nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 1, bias=False), nn.BatchNorm2d(2 * width),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(self.stem(x), 2)
        for stage in self.stages:
            h = stage(h)
        h = h + self.refine(h)
        h = F.adaptive_avg_pool2d(h, 1)
        return self.classifier(torch.flatten(h, 1))


class UntraceableNet(nn.Module):
    """Python control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        if h.sum() > 0:
            h = -h
        return self.fc(h.mean(dim=(2, 3)))
