"""Checks and small building blocks shared by the zoo builders."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from n2n.errors import ModelError


def check_positive_int(model: str, option: str, value: Any) -> int:
    """Return ``value`` if it is an int >= 1 (bools excluded), else raise ModelError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"Option {option} of model {model!r} must be a whole number >= 1, got {value!r}.")
    return value


def check_width_mult(model: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise ModelError."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value <= 0:
        raise ModelError(
            f"Option width_mult of model {model!r} must be a finite number > 0 "
            f"(1.0 keeps the standard widths), got {value!r}."
        )
    return float(value)


def scaled_width(width: int, width_mult: float) -> int:
    """``width * width_mult`` rounded to the nearest channel count, never below 1."""
    return max(1, int(round(width * width_mult)))


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """A 3x3 same-padding convolution, BatchNorm and ReLU (bias is redundant before BN)."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        # Not in place: hooks that keep a BatchNorm output must not see it overwritten.
        nn.ReLU(),
    ]


def init_conv_bn(model: nn.Module) -> None:
    """He initialisation for convolutions and unit BatchNorm, as ResNet/VGG training expects."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
