"""Checks of single input values at the door: whole numbers and real numbers in range, seeds,
output paths. Each raises ConfigError naming the option, so the CLI prints one line.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

# torch.manual_seed takes at most a 64-bit unsigned value; 2**63 - 1 also fits every int64 field
# a seed is stored in (numpy, JSON readers in other languages).
MAX_SEED = 2**63 - 1


def is_whole_number(value: Any, least: int, most: int | None = None) -> bool:
    """An int (not a bool, which Python counts as one) in [least, most]."""
    return (isinstance(value, int) and not isinstance(value, bool) and value >= least
            and (most is None or value <= most))


def is_real_number(value: Any) -> bool:
    """An int or float that is finite (not a bool, not NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_whole(name: str, value: Any, least: int, most: int | None = None) -> None:
    if not is_whole_number(value, least, most):
        span = f"between {least:,} and {most:,}" if most is not None else f"of at least {least}"
        raise ConfigError(f"{name} must be a whole number {span}, got {value!r}")


def check_real(name: str, value: Any, low: float, high: float = math.inf, *,
               open_low: bool = False, open_high: bool = False) -> None:
    """A finite number in the interval from `low` to `high`, each end closed unless said open."""
    ok = is_real_number(value) and (value > low if open_low else value >= low) and (
        value < high if open_high else value <= high)
    if not ok:
        left, right = "(" if open_low else "[", ")" if open_high or high == math.inf else "]"
        raise ConfigError(f"{name} must be a finite number in {left}{low:g}, {high:g}{right}, got {value!r}")


def check_seed(name: str, value: Any) -> None:
    check_whole(name, value, 0, MAX_SEED)


def check_output_path(path: str | Path, what: str) -> Path:
    """Refuse an output path no file or folder can be made at: the nearest existing folder
    above it must be a folder this process may write into. Missing folders in between are
    made later, as `mkdir -p` would (a fresh checkout has no runs/ folder yet)."""
    path = Path(path)
    if path.is_dir() and not what.endswith("folder"):
        raise ConfigError(f"{what} {path} is a folder: name a file inside it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {path} cannot be made: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be made: {parent} is not writable by this user")
    return path
