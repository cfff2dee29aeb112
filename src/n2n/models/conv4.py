"""Conv4: the paper's small four-convolution network for MNIST-like data."""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from n2n.errors import ModelError
from n2n.models.common import check_positive_int, check_width_mult, conv_bn_relu, init_conv_bn, scaled_width
from n2n.models.registry import register_model

# Four convolution widths, then the hidden fully connected width.
DEFAULT_CONV4_WIDTHS = (32, 32, 64, 64, 128)
# Pooling to a fixed 4x4 map makes the classifier's input size the same for
# 28x28 (maps end at 7x7) and 32x32 (maps end at 8x8) images.
POOLED_SIZE = 4


class Conv4(nn.Module):
    """conv-conv-pool-conv-conv-pool, average pool to 4x4, FC hidden layer, FC output."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int]) -> None:
        super().__init__()
        c1, c2, c3, c4, hidden = widths
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, c1),
            *conv_bn_relu(c1, c2),
            nn.MaxPool2d(2),
            *conv_bn_relu(c2, c3),
            *conv_bn_relu(c3, c4),
            nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(c4 * POOLED_SIZE * POOLED_SIZE, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        init_conv_bn(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


@register_model("conv4")
def conv4(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] | None = None,
    width_mult: float = 1.0,
) -> nn.Module:
    """Conv4; ``widths`` = [conv1, conv2, conv3, conv4, hidden FC], each scaled by ``width_mult``."""
    check_positive_int("conv4", "in_channels", in_channels)
    check_positive_int("conv4", "num_classes", num_classes)
    multiplier = check_width_mult("conv4", width_mult)
    base = _check_widths(DEFAULT_CONV4_WIDTHS if widths is None else widths)
    return Conv4(in_channels, num_classes, [scaled_width(w, multiplier) for w in base])


def _check_widths(widths: Any) -> list[int]:
    expected = len(DEFAULT_CONV4_WIDTHS)
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) != expected:
        raise ModelError(
            f"Option widths of model 'conv4' must list {expected} channel counts "
            f"(4 convolutions, then the hidden FC layer), got {widths!r}."
        )
    return [check_positive_int("conv4", f"widths[{index}]", w) for index, w in enumerate(widths)]
