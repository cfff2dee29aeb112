"""Process-wide set-up: seeding and device choice, done once at an entry point."""
from __future__ import annotations

import random

import numpy as np
import torch

from .errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is reproducible on the same device."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str | None = None) -> torch.device:
    """`None` or "auto" picks the GPU when there is one; otherwise the named device."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is available: use --device cpu")
    return device
