"""Process-wide set-up: seeding and device choice, done once at an entry point."""
from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is reproducible on the same device."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextmanager
def kept_random_state() -> Iterator[None]:
    """Whatever is seeded or drawn inside, Python's, NumPy's and torch's global generators
    leave as they entered: a library call must not reseed its caller's process.

    CUDA generators are kept where CUDA was in use on entry; a process that first uses CUDA
    inside has no earlier CUDA state to go back to."""
    python, numpy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


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
