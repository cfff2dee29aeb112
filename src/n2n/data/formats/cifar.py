"""CIFAR-10 and CIFAR-100: the python-pickle batches from the official tarballs."""

from __future__ import annotations

from pathlib import Path

from n2n.data.formats.common import concat_splits, flat_rgb_images, get_entry, label_vector, load_pickle, to_split
from n2n.data.structures import Split
from n2n.errors import DataError

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR100_FOLDER = "cifar-100-python"


def check_cifar10_files(root: Path) -> dict[str, bool]:
    folder = root / CIFAR10_FOLDER
    return {f"{CIFAR10_FOLDER}/{name}": (folder / name).is_file() for name in (*CIFAR10_TRAIN, CIFAR10_TEST)}


def check_cifar100_files(root: Path) -> dict[str, bool]:
    folder = root / CIFAR100_FOLDER
    return {f"{CIFAR100_FOLDER}/{name}": (folder / name).is_file() for name in ("train", "test")}


def read_cifar10(root: Path) -> tuple[Split, Split]:
    folder = root / CIFAR10_FOLDER
    train = concat_splits([read_cifar_batch(folder / name, "labels") for name in CIFAR10_TRAIN])
    return train, read_cifar_batch(folder / CIFAR10_TEST, "labels")


def read_cifar100(root: Path) -> tuple[Split, Split]:
    """Uses the 100 fine labels (the 20 coarse superclasses are ignored)."""
    folder = root / CIFAR100_FOLDER
    return read_cifar_batch(folder / "train", "fine_labels"), read_cifar_batch(folder / "test", "fine_labels")


def read_cifar_batch(path: Path, label_key: str) -> Split:
    what = "CIFAR python batch"
    if not path.is_file():
        raise DataError(f"Missing {path}.")
    content = load_pickle(path, what)
    images = flat_rgb_images(get_entry(content, "data", path, what), path)
    labels = label_vector(get_entry(content, label_key, path, what), images.shape[0], path)
    return to_split(images, labels)
