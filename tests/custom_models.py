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


# ------------------------------------------------- written as torchvision and timm write them


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one in-place ReLU module called twice, ``out += identity``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class TorchvisionResNet18(nn.Module):
    """torchvision's resnet18 layout (7x7 stem, max pool, four stages of two BasicBlocks), narrowed to ``width``."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, 1)
        self.layer2 = self._make_layer(2 * width, 2)
        self.layer3 = self._make_layer(4 * width, 2)
        self.layer4 = self._make_layer(8 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class ConvNormActivation(nn.Sequential):
    """torchvision's Conv2dNormActivation with an in-place ReLU6."""

    def __init__(self, inp: int, oup: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: 1x1 expansion, depthwise 3x3, linear 1x1 projection, sum when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormActivation(inp, hidden, kernel_size=1))
        layers += [
            ConvNormActivation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class SmallMobileNetV2(nn.Module):
    """MobileNetV2 as torchvision lays it out, with few and narrow stages (16x16 to 32x32 inputs)."""

    SETTINGS = ((1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 3, 2), (4, 24, 1, 1))  # expansion, width, repeats, stride

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        features: list[nn.Module] = [ConvNormActivation(in_channels, 8, stride=1)]
        inp = 8
        for expansion, width, repeats, stride in self.SETTINGS:
            for index in range(repeats):
                features.append(InvertedResidual(inp, width, stride if index == 0 else 1, expansion))
                inp = width
        features.append(ConvNormActivation(inp, 48, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(48, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


class GroupNormNet(nn.Module):
    """A plain CNN normalised by GroupNorm (and one InstanceNorm), functional pooling, a flatten head."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 24, 3, padding=1), nn.InstanceNorm2d(24, affine=True), nn.GELU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class SqueezeExcitation(nn.Module):
    """The usual SE gate: the shape read with ``x.size()``, two linear layers, a sigmoid scale."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class SEBasicBlock(BasicBlock):
    """A torchvision BasicBlock with an SE gate before the sum."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__(inplanes, planes, stride, downsample)
        self.se = SqueezeExcitation(planes)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        out += identity
        return self.relu(out)


class SEResNet(nn.Module):
    """Stem, three stages of two SE blocks, a head with ``F.dropout(..., training=self.training)``."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks, inplanes = [], width
        for planes, stride in ((width, 1), (2 * width, 2), (4 * width, 2)):
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
            blocks += [SEBasicBlock(inplanes, planes, stride, downsample), SEBasicBlock(planes, planes)]
            inplanes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        x = F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1)
        x = F.dropout(x, p=0.3, training=self.training)
        return self.fc(x)


class DenseLayer(nn.Module):
    """torchvision's DenseNet layer (BN, ReLU, 1x1 bottleneck of 4 x growth, BN, ReLU, 3x3) whose
    output is concatenated to its input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(4 * growth), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x), inplace=True))
        out = self.conv2(F.relu(self.norm2(out), inplace=True))
        return torch.cat([x, out], 1)


class SmallDenseNet(nn.Module):
    """DenseNet-BC's layout (growth 12, as on CIFAR), two dense blocks of three layers joined by a
    transition (1x1 conv, average pool)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, growth: int = 12) -> None:
        super().__init__()
        width = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False)]
        for block in range(2):
            for _ in range(3):
                layers.append(DenseLayer(width, growth))
                width += growth
            if block == 0:
                layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Conv2d(width, width // 2, 1, bias=False),
                           nn.AvgPool2d(2)]
                width //= 2
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class FunctionalVGG(nn.Module):
    """A VGG whose forward calls F.relu, F.max_pool2d and F.dropout itself; x.view flattens."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, widths: tuple[int, ...] = (8, 8, 16, 16, 32)) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for width in widths:
            self.convs.append(nn.Conv2d(in_channels, width, 3, padding=1))
            in_channels = width
        self.fc1, self.fc2 = nn.Linear(in_channels * 4 * 4, 32), nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for index, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if index in (1, 3):
                x = F.max_pool2d(x, 2)
        x = x.view(x.size(0), -1)
        x = F.dropout(F.relu(self.fc1(x)), p=0.5, training=self.training)
        return self.fc2(x)


class LeNet(nn.Module):
    """LeNet-5's layout: two 5x5 convs with pools, nn.Flatten, then linear layers."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.fc1, self.fc2 = nn.Linear(16 * 2 * 2, 60), nn.Linear(60, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(self.flatten(self.features(x)))))


# A short n2n.compress of these models: a 4x parameter budget, one policy epoch a stage. Layers
# of 6 to 16 channels (LeNet) reach a quarter of the parameters only below the default floor of
# 10 channels a layer.
SHORT_COMPRESS = {"compression": 4, "min_width": 4, "epochs_per_stage": 1, "rollouts": 3, "progress": False,
                  "proxy": {"subset": 32, "batch_size": 16}, "final": {"epochs": 1, "subset": None}}

# The user-style models by name, each built at the size the tests use (16x16 inputs, 10 classes).
USER_MODELS = {
    "torchvision_resnet18": lambda: TorchvisionResNet18(width=8),
    "mobilenet_v2": SmallMobileNetV2,
    "groupnorm": GroupNormNet,
    "se_resnet": SEResNet,
    "densenet": SmallDenseNet,
    "functional_vgg": FunctionalVGG,
    "lenet": LeNet,
}
