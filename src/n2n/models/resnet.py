"""CIFAR-style ResNet-18/34: 3x3 stem without max pool, four BasicBlock stages."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from n2n.models.common import check_positive_int, check_width_mult, init_conv_bn, scaled_width
from n2n.models.registry import register_model

STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; a 1x1 conv-BN projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        # A separate module per ReLU so every activation is its own node in a trace.
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return self.relu2(out)


class ResNet(nn.Module):
    """conv1-bn1-relu stem, layer1..layer4 of BasicBlocks, global average pool, fc."""

    def __init__(
        self, blocks_per_stage: Sequence[int], in_channels: int, num_classes: int, width_mult: float
    ) -> None:
        super().__init__()
        widths = [scaled_width(w, width_mult) for w in STAGE_WIDTHS]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        channels = widths[0]
        stages = []
        for index, (width, count) in enumerate(zip(widths, blocks_per_stage)):
            first_stride = 1 if index == 0 else 2
            stages.append(_stage(channels, width, count, first_stride))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(self.flatten(self.avgpool(out)))


def _stage(in_channels: int, out_channels: int, count: int, first_stride: int) -> nn.Sequential:
    blocks = [BasicBlock(in_channels, out_channels, first_stride)]
    blocks += [BasicBlock(out_channels, out_channels, 1) for _ in range(count - 1)]
    return nn.Sequential(*blocks)


def _build_resnet(
    name: str, blocks: Sequence[int], in_channels: int, num_classes: int, width_mult: float
) -> nn.Module:
    check_positive_int(name, "in_channels", in_channels)
    check_positive_int(name, "num_classes", num_classes)
    return ResNet(blocks, in_channels, num_classes, check_width_mult(name, width_mult))


@register_model("resnet18")
def resnet18(*, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """ResNet-18 (BasicBlocks [2, 2, 2, 2]): about 11.17 M parameters at full width."""
    return _build_resnet("resnet18", (2, 2, 2, 2), in_channels, num_classes, width_mult)


@register_model("resnet34")
def resnet34(*, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """ResNet-34 (BasicBlocks [3, 4, 6, 3]): about 21.28 M parameters at full width."""
    return _build_resnet("resnet34", (3, 4, 6, 3), in_channels, num_classes, width_mult)
