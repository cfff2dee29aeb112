"""CIFAR-style VGG with BatchNorm (configurations A, B, D, E) for 28x28 and 32x32 inputs."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from n2n.models.common import check_positive_int, check_width_mult, conv_bn_relu, init_conv_bn, scaled_width
from n2n.models.registry import register_model

POOL = "M"
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg13": [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg16": [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL],
    "vgg19": [
        64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
        512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL,
    ],
}


class VGG(nn.Module):
    """Conv-BN-ReLU stacks with 2x2 max pools, global average pool, one linear classifier."""

    def __init__(
        self, config: Sequence[int | str], in_channels: int, num_classes: int, width_mult: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == POOL:
                # ceil_mode keeps 28x28 inputs alive through five pools: 28-14-7-4-2-1.
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                width = scaled_width(int(item), width_mult)
                layers.extend(conv_bn_relu(channels, width))
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def _build_vgg(name: str, in_channels: int, num_classes: int, width_mult: float) -> nn.Module:
    check_positive_int(name, "in_channels", in_channels)
    check_positive_int(name, "num_classes", num_classes)
    return VGG(VGG_CONFIGS[name], in_channels, num_classes, check_width_mult(name, width_mult))


@register_model("vgg11")
def vgg11(*, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """VGG-11 (configuration A) with BatchNorm."""
    return _build_vgg("vgg11", in_channels, num_classes, width_mult)


@register_model("vgg13")
def vgg13(*, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """VGG-13 (configuration B) with BatchNorm."""
    return _build_vgg("vgg13", in_channels, num_classes, width_mult)


@register_model("vgg16")
def vgg16(*, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """VGG-16 (configuration D) with BatchNorm."""
    return _build_vgg("vgg16", in_channels, num_classes, width_mult)


@register_model("vgg19")
def vgg19(*, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0) -> nn.Module:
    """VGG-19 (configuration E) with BatchNorm: about 20.0 M parameters at full width."""
    return _build_vgg("vgg19", in_channels, num_classes, width_mult)
