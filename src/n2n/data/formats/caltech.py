"""Caltech-256: a folder per class of JPEGs, decoded to RGB and resized to 32 x 32.

Class indices follow the sorted folder names (001.ak47 -> 0, ...). The
``257.clutter`` folder is background, not an object category, so it is left
out: 256 classes. Caltech-256 has no official test set; each class is split
with a fixed seed (20 % test, at least one test image when the class has two or
more), so every run and every machine sees the same test images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from n2n.data.formats.common import to_split
from n2n.data.structures import Split
from n2n.errors import DataError

logger = logging.getLogger(__name__)

CALTECH_FOLDER = "256_ObjectCategories"
CLUTTER_CLASS = "257.clutter"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 256  # fixed: the test set is part of the data set's definition, not of a run


def check_caltech_files(root: Path) -> dict[str, bool]:
    return {f"{CALTECH_FOLDER}/ (one sub-folder per class)": (root / CALTECH_FOLDER).is_dir()}


def read_caltech256(root: Path) -> tuple[Split, Split]:
    class_files = list_class_images(root / CALTECH_FOLDER)
    train_files, train_labels, test_files, test_labels = _split_per_class(class_files)
    logger.info(
        "Caltech-256: %d classes, %d train and %d test images", len(class_files), len(train_files), len(test_files)
    )
    return (
        to_split(_decode_all(train_files, "train"), np.asarray(train_labels)),
        to_split(_decode_all(test_files, "test"), np.asarray(test_labels)),
    )


def list_class_images(folder: Path) -> list[list[Path]]:
    """Image files per class, classes in sorted folder order, clutter and non-images left out."""
    if not folder.is_dir():
        raise DataError(f"Missing the Caltech-256 folder {folder}.")
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not _hidden(d) and d.name != CLUTTER_CLASS)
    if not class_dirs:
        raise DataError(f"{folder} holds no class folders (expected 001.ak47/, 002.american-flag/, ...).")
    return [sorted(f for f in d.iterdir() if _is_image_file(f)) for d in class_dirs]


def _hidden(path: Path) -> bool:
    """Dot files, such as the ._name.jpg metadata some archivers add, are not data."""
    return path.name.startswith(".")


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not _hidden(path) and path.suffix.lower() in IMAGE_SUFFIXES


def _split_per_class(class_files: list[list[Path]]) -> tuple[list[Path], list[int], list[Path], list[int]]:
    train_files: list[Path] = []
    train_labels: list[int] = []
    test_files: list[Path] = []
    test_labels: list[int] = []
    for label, files in enumerate(class_files):
        # One generator per class: adding or removing a class leaves the others' split unchanged.
        order = np.random.default_rng([SPLIT_SEED, label]).permutation(len(files))
        n_test = max(1, round(TEST_FRACTION * len(files))) if len(files) >= 2 else 0
        is_test = np.zeros(len(files), dtype=bool)
        is_test[order[:n_test]] = True
        for path, test in zip(files, is_test):
            (test_files if test else train_files).append(path)
            (test_labels if test else train_labels).append(label)
    return train_files, train_labels, test_files, test_labels


def _decode_all(files: list[Path], split_name: str) -> np.ndarray:
    images = np.empty((len(files), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, path in enumerate(tqdm(files, desc=f"Caltech-256 {split_name}", unit="img", disable=None)):
        images[i] = decode_image(path).transpose(2, 0, 1)
    return images


def decode_image(path: Path) -> np.ndarray:
    """One image file -> IMAGE_SIZE x IMAGE_SIZE x 3 uint8 RGB."""
    try:
        from PIL import Image
    except ImportError as error:
        raise DataError("Reading Caltech-256 images needs Pillow: pip install pillow.") from error
    try:
        with Image.open(path) as image:
            # JPEG draft mode decodes at a reduced scale directly: much faster for a 32 x 32 target.
            image.draft("RGB", (2 * IMAGE_SIZE, 2 * IMAGE_SIZE))
            rgb = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as error:  # Pillow raises many types on broken files
        raise DataError(f"{path} is not a readable image ({error}); remove or replace it.") from error
