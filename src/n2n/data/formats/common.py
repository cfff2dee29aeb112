"""Helpers the format readers share: safe unpickling, dictionary look-ups, split building."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from n2n.data.structures import Split
from n2n.errors import DataError

# A data-set pickle only needs numpy arrays, dtypes and plain containers. Refusing
# every other global means a tampered file cannot run code while it is read.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_pickle(path: Path, what: str) -> dict:
    """Read a pickled dict of arrays (Python 2 pickles too: byte strings stay bytes)."""
    try:
        with open(path, "rb") as handle:
            content = _ArrayUnpickler(handle, encoding="bytes").load()
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error.strerror or error}.") from error
    except Exception as error:  # unpickling raises many types on foreign bytes
        raise DataError(
            f"{path} is not a {what} (unreadable as a pickle: {error}); replace it with the original file."
        ) from error
    if not isinstance(content, dict):
        raise DataError(f"{path} is not a {what}: it holds a {type(content).__name__}, not a dict.")
    return content


def get_entry(content: dict, key: str, path: Path, what: str) -> Any:
    """``content[key]`` where the key may be stored as bytes (Python 2 pickles) or str."""
    for candidate in (key.encode(), key):
        if candidate in content:
            return content[candidate]
    found = ", ".join(sorted(k.decode() if isinstance(k, bytes) else str(k) for k in content))
    raise DataError(f"{path} is not a {what}: it has no '{key}' entry (found: {found or 'nothing'}).")


def flat_rgb_images(data: Any, path: Path, side: int = 32) -> np.ndarray:
    """N x (3*side*side) uint8 rows in channel-planar order -> N x 3 x side x side."""
    array = np.asarray(data)
    row = 3 * side * side
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != row:
        raise DataError(
            f"{path}: expected 'data' as N x {row} uint8, got {array.shape} {array.dtype}; "
            "the file is not in the expected format."
        )
    return array.reshape(-1, 3, side, side)


def label_vector(labels: Any, count: int, path: Path) -> np.ndarray:
    """Labels as a flat int64 vector with one entry per image."""
    try:
        vector = np.asarray(labels).astype(np.int64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: the labels are not integers ({error}).") from error
    if vector.shape[0] != count:
        raise DataError(f"{path}: {count} images but {vector.shape[0]} labels.")
    return vector


def to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """Contiguous torch tensors; copies only what is read-only (torch needs writable memory)."""
    return Split(images=_writable_tensor(images, np.uint8), labels=_writable_tensor(labels, np.int64))


def _writable_tensor(array: np.ndarray, dtype: type) -> torch.Tensor:
    contiguous = np.ascontiguousarray(array, dtype=dtype)
    if not contiguous.flags.writeable:
        contiguous = contiguous.copy()
    return torch.from_numpy(contiguous)


def concat_splits(parts: list[Split]) -> Split:
    return Split(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def present(path: Path) -> bool:
    return path.is_file()
