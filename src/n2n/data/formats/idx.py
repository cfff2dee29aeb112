"""MNIST and Fashion-MNIST: IDX files, plain or gzip-compressed."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from n2n.data.formats.common import label_vector, to_split
from n2n.data.structures import Split
from n2n.errors import DataError

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_UBYTE = 0x08  # the IDX type code for unsigned bytes, the only one these data sets use


def find_idx_file(root: Path, stem: str) -> Path | None:
    """The plain file if present, else its .gz; None when neither exists."""
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def check_idx_files(root: Path) -> dict[str, bool]:
    return {f"{stem}[.gz]": find_idx_file(root, stem) is not None for stem in IDX_FILES.values()}


def read_idx_pair(root: Path) -> tuple[Split, Split]:
    """Reader for the MNIST-style layout: four IDX files side by side in ``root``."""
    return (
        _read_images_and_labels(root, IDX_FILES["train_images"], IDX_FILES["train_labels"]),
        _read_images_and_labels(root, IDX_FILES["test_images"], IDX_FILES["test_labels"]),
    )


def _read_images_and_labels(root: Path, images_stem: str, labels_stem: str) -> Split:
    images_path = _require(root, images_stem)
    labels_path = _require(root, labels_stem)
    images = read_idx(images_path, expected_ndim=3)
    labels = label_vector(read_idx(labels_path, expected_ndim=1), images.shape[0], labels_path)
    return to_split(images[:, None, :, :], labels)


def _require(root: Path, stem: str) -> Path:
    path = find_idx_file(root, stem)
    if path is None:
        raise DataError(f"Missing {root / stem} (or {stem}.gz).")
    return path


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes, checking magic number, dimensions and size."""
    raw = _read_bytes(path)
    dims = _parse_header(raw, path, expected_ndim)
    header_size = 4 + 4 * len(dims)
    expected = math.prod(dims)  # Python ints: four 32-bit dimensions overflow numpy's int64
    actual = len(raw) - header_size
    if actual < expected:
        raise DataError(
            f"{path} is truncated: its header promises {expected} bytes of data but it holds {actual}; "
            "download it again."
        )
    if actual > expected:
        raise DataError(
            f"{path} holds {actual - expected} bytes more than its header says; it is not a valid IDX file."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def _read_bytes(path: Path) -> bytearray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return bytearray(handle.read())
        return bytearray(path.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path} is not a complete gzip file ({error}); download it again.") from error
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error.strerror or error}.") from error


def _parse_header(raw: bytearray, path: Path, expected_ndim: int) -> tuple[int, ...]:
    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes).")
    zero, type_code, ndim = struct.unpack_from(">HBB", raw)
    if zero != 0 or type_code != _UBYTE or ndim != expected_ndim:
        raise DataError(
            f"{path} is not an IDX file of {expected_ndim}-d unsigned bytes "
            f"(magic number 0x{bytes(raw[:4]).hex()}, expected 0x0000080{expected_ndim})."
        )
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated inside its header; download it again.")
    return struct.unpack_from(f">{ndim}I", raw, 4)
