"""Writing files whole: into a temporary sibling, then renamed over the target.

A crash at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def temporary_sibling(target: str | Path) -> Iterator[Path]:
    """A fresh file beside `target` (same file system, so renaming it is atomic); removed unless renamed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    os.chmod(name, 0o666 & ~current_umask())  # mkstemp makes files private; ours are meant to be shared
    try:
        yield Path(name)
    finally:
        if os.path.exists(name):
            os.unlink(name)


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save, whole or not at all."""
    with temporary_sibling(path) as tmp:
        torch.save(obj, tmp)
        os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    with temporary_sibling(path) as tmp:
        tmp.write_text(text)
        os.replace(tmp, path)
