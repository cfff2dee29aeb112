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


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError raised inside names `path` where it named no file (a full disk fails a write()
    with errno alone), so the user learns where the space ran out."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save, whole or not at all."""
    with naming(path), temporary_sibling(path) as tmp:
        # into an open stream: saved to a path, torch reports a full disk as an opaque RuntimeError
        with open(tmp, "wb") as stream:
            torch.save(obj, stream)
        os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    with naming(path), temporary_sibling(path) as tmp:
        tmp.write_text(text)
        os.replace(tmp, path)
