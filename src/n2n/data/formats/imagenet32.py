"""Downsampled ImageNet 32 x 32: ``train_data_batch_1..N`` and ``val_data``, pickled or .npz.

Each batch holds ``data`` (N x 3072 uint8, channel-planar like CIFAR) and
``labels`` numbered 1..1000; they are shifted to 0..999. The training batches
must be numbered 1..N without gaps (the official release has N = 10); a copy
with fewer batches is accepted and the count is logged.
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path

import numpy as np

from n2n.data.formats.common import concat_splits, flat_rgb_images, get_entry, label_vector, load_pickle, to_split
from n2n.data.structures import Split
from n2n.errors import DataError

logger = logging.getLogger(__name__)

TRAIN_PREFIX = "train_data_batch_"
VAL_STEM = "val_data"
# The official archives unpack into these sub-folders; files directly in the root work too.
TRAIN_FOLDERS = ("", "Imagenet32_train", "Imagenet32_train_npz")
VAL_FOLDERS = ("", "Imagenet32_val", "Imagenet32_val_npz")
_WHAT = "downsampled-ImageNet batch"


def find_batch(root: Path, folders: tuple[str, ...], stem: str) -> Path | None:
    """The pickle ``stem`` or ``stem.npz`` in the first folder that has either."""
    for folder in folders:
        for candidate in (root / folder / stem, root / folder / f"{stem}.npz"):
            if candidate.is_file():
                return candidate
    return None


def check_imagenet32_files(root: Path) -> dict[str, bool]:
    return {
        f"{TRAIN_PREFIX}1[.npz]": find_batch(root, TRAIN_FOLDERS, f"{TRAIN_PREFIX}1") is not None,
        f"{VAL_STEM}[.npz]": find_batch(root, VAL_FOLDERS, VAL_STEM) is not None,
    }


def read_imagenet32(root: Path) -> tuple[Split, Split]:
    train_paths = train_batch_paths(root)
    logger.info("ImageNet32: reading %d training batches from %s", len(train_paths), train_paths[0].parent)
    train = concat_splits([read_imagenet32_batch(path) for path in train_paths])
    val_path = find_batch(root, VAL_FOLDERS, VAL_STEM)
    if val_path is None:
        raise DataError(f"Missing {root / VAL_STEM} (or {VAL_STEM}.npz).")
    return train, read_imagenet32_batch(val_path)


def train_batch_paths(root: Path) -> list[Path]:
    """train_data_batch_1..N, contiguous, all in the folder that holds batch 1."""
    first = find_batch(root, TRAIN_FOLDERS, f"{TRAIN_PREFIX}1")
    if first is None:
        raise DataError(f"Missing {root / (TRAIN_PREFIX + '1')} (or {TRAIN_PREFIX}1.npz).")
    folder = first.parent
    paths = [first]
    while (following := find_batch(folder, ("",), f"{TRAIN_PREFIX}{len(paths) + 1}")) is not None:
        paths.append(following)
    pattern = re.compile(rf"{TRAIN_PREFIX}(\d+)(\.npz)?")
    numbers = [int(m.group(1)) for f in folder.iterdir() if (m := pattern.fullmatch(f.name))]
    if max(numbers) > len(paths):
        raise DataError(
            f"{folder}: {TRAIN_PREFIX}{len(paths) + 1} is missing although {TRAIN_PREFIX}{max(numbers)} exists; "
            "the training batches must be numbered 1..N without gaps."
        )
    return paths


def read_imagenet32_batch(path: Path) -> Split:
    content = _load_npz(path) if path.suffix == ".npz" else load_pickle(path, _WHAT)
    images = flat_rgb_images(get_entry(content, "data", path, _WHAT), path)
    labels = label_vector(get_entry(content, "labels", path, _WHAT), images.shape[0], path)
    if labels.size and labels.min() < 1:
        raise DataError(f"{path}: labels must be numbered from 1 (1..1000), found {labels.min()}.")
    return to_split(images, labels - 1)


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error.strerror or error}.") from error
    except (ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise DataError(f"{path} is not a readable .npz {_WHAT} ({error}); download it again.") from error
