"""SVHN (cropped digits): the MATLAB files train_32x32.mat and test_32x32.mat."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from n2n.data.formats.common import label_vector, to_split
from n2n.data.structures import Split
from n2n.errors import DataError

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def check_svhn_files(root: Path) -> dict[str, bool]:
    return {name: (root / name).is_file() for name in SVHN_FILES}


def read_svhn(root: Path) -> tuple[Split, Split]:
    return read_svhn_mat(root / SVHN_FILES[0]), read_svhn_mat(root / SVHN_FILES[1])


def read_svhn_mat(path: Path) -> Split:
    """X is H x W x C x N uint8; y is N x 1 with 1..10, where 10 stands for the digit 0."""
    content = _load_mat(path)
    for key in ("X", "y"):
        if key not in content:
            raise DataError(f"{path} is not an SVHN file: it has no '{key}' variable.")
    images = np.asarray(content["X"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != 3:
        raise DataError(f"{path}: expected X as H x W x 3 x N uint8, got {images.shape} {images.dtype}.")
    images = images.transpose(3, 2, 0, 1)
    labels = label_vector(content["y"], images.shape[0], path)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise DataError(f"{path}: labels must lie in 1..10 (10 = digit 0), found {labels.min()}..{labels.max()}.")
    return to_split(images, np.where(labels == 10, 0, labels))


def _load_mat(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"Missing {path}.")
    try:
        from scipy.io import loadmat
    except ImportError as error:
        raise DataError("Reading SVHN .mat files needs SciPy: pip install scipy.") from error
    try:
        return loadmat(str(path))
    except NotImplementedError as error:  # MATLAB v7.3 files are HDF5, which loadmat cannot read
        raise DataError(f"{path} is a MATLAB v7.3 file; use the original SVHN train/test_32x32.mat files.") from error
    except Exception as error:  # loadmat raises many types on foreign or cut bytes
        raise DataError(f"{path} is not a readable MATLAB file ({error}); download it again.") from error
