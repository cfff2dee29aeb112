"""Tiny data sets written in each standard on-disk format, for tests.

Every writer returns the arrays it wrote, in the layout the readers must give
back (N x C x H x W uint8 images, 0-based int64 labels), so a test can check an
exact round trip.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray]


def random_images(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


def random_labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, num_classes, n).astype(np.int64)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x00 0x00 0x08 ndim, big-endian dims, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_mnist(
    root: Path, *, n_train: int = 40, n_test: int = 10, gz: bool = False, size: int = 28, seed: int = 0
) -> tuple[Arrays, Arrays]:
    """The four MNIST / Fashion-MNIST IDX files in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    train = (random_images(n_train, 1, size, seed), random_labels(n_train, 10, seed))
    test = (random_images(n_test, 1, size, seed + 1), random_labels(n_test, 10, seed + 1))
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", images[:, 0], gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz=gz)
    return train, test


def cifar_batch_bytes(images: np.ndarray, labels: np.ndarray, protocol: int = 2) -> bytes:
    """A CIFAR-10 python batch as the official (Python 2) files hold it: bytes keys, N x 3072 rows."""
    content = {b"batch_label": b"fake", b"labels": [int(v) for v in labels], b"data": images.reshape(len(images), -1)}
    return pickle.dumps(content, protocol=protocol)


def write_cifar10(root: Path, *, per_batch: int = 6, n_test: int = 8, seed: int = 0) -> tuple[Arrays, Arrays]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = [], []
    for i in range(1, 6):
        images, labels = random_images(per_batch, 3, 32, seed + i), random_labels(per_batch, 10, seed + i)
        (folder / f"data_batch_{i}").write_bytes(cifar_batch_bytes(images, labels))
        train_images.append(images)
        train_labels.append(labels)
    test = (random_images(n_test, 3, 32, seed + 9), random_labels(n_test, 10, seed + 9))
    (folder / "test_batch").write_bytes(cifar_batch_bytes(*test))
    return (np.concatenate(train_images), np.concatenate(train_labels)), test


def write_cifar100(root: Path, *, n_train: int = 30, n_test: int = 8, seed: int = 0) -> tuple[Arrays, Arrays]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    train = (random_images(n_train, 3, 32, seed), random_labels(n_train, 100, seed))
    test = (random_images(n_test, 3, 32, seed + 1), random_labels(n_test, 100, seed + 1))
    for name, (images, labels) in (("train", train), ("test", test)):
        content = {
            b"data": images.reshape(len(images), -1),
            b"fine_labels": [int(v) for v in labels],
            b"coarse_labels": [int(v) // 5 for v in labels],  # differ from fine: the reader must pick fine
        }
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return train, test


def write_svhn(root: Path, *, n_train: int = 12, n_test: int = 6, seed: int = 0) -> tuple[Arrays, Arrays]:
    """train/test_32x32.mat: X is H x W x C x N, y is N x 1 with 10 standing for digit 0."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    splits = []
    for name, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = random_images(n, 3, 32, s), random_labels(n, 10, s)
        labels[0] = 0  # make sure the 10 -> 0 mapping is exercised
        stored = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        savemat(str(root / f"{name}_32x32.mat"), {"X": images.transpose(2, 3, 1, 0), "y": stored})
        splits.append((images, labels))
    return splits[0], splits[1]


CALTECH_COLOURS = ((250, 10, 10), (10, 250, 10), (10, 10, 250), (128, 128, 128))


def write_caltech256(root: Path, counts: tuple[int, ...] = (5, 3, 1), *, with_clutter: bool = True) -> list[str]:
    """256_ObjectCategories/NNN.name/*.jpg, one solid colour per class (JPEG keeps it nearly exact).

    Returns the class folder names in label order.
    """
    from PIL import Image

    base = root / "256_ObjectCategories"
    names = [f"{i + 1:03d}.class{i + 1}" for i in range(len(counts))]
    for name, count, colour in zip(names, counts, CALTECH_COLOURS):
        folder = base / name
        folder.mkdir(parents=True)
        for j in range(count):
            Image.new("RGB", (40 + j, 30), colour).save(folder / f"{name[:3]}_{j + 1:04d}.jpg", quality=95)
        (folder / "notes.txt").write_text("not an image")
    Image.new("L", (20, 20), 77).save(base / names[0] / "grey_0001.jpg")  # greyscale: must become RGB
    if with_clutter:
        (base / "257.clutter").mkdir()
        Image.new("RGB", (32, 32), (1, 2, 3)).save(base / "257.clutter" / "257_0001.jpg")
    return names


def write_imagenet32(
    root: Path, *, n_batches: int = 2, per_batch: int = 5, n_val: int = 4, npz: bool = False, seed: int = 0
) -> tuple[Arrays, Arrays]:
    """train_data_batch_1..n and val_data with 1-based labels; returns 0-based labels."""
    root.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = [], []
    for i in range(1, n_batches + 1):
        images, labels = random_images(per_batch, 3, 32, seed + i), random_labels(per_batch, 1000, seed + i)
        write_imagenet32_batch(root / f"train_data_batch_{i}", images, labels, npz=npz)
        train_images.append(images)
        train_labels.append(labels)
    val = (random_images(n_val, 3, 32, seed + 99), random_labels(n_val, 1000, seed + 99))
    write_imagenet32_batch(root / "val_data", *val, npz=npz)
    return (np.concatenate(train_images), np.concatenate(train_labels)), val


def write_imagenet32_batch(path: Path, images: np.ndarray, labels: np.ndarray, *, npz: bool = False) -> None:
    data = images.reshape(len(images), -1)
    one_based = labels + 1
    if npz:
        np.savez(path.with_name(path.name + ".npz"), data=data, labels=one_based)
    else:
        content = {"data": data, "labels": [int(v) for v in one_based], "mean": np.zeros(3072)}
        path.write_bytes(pickle.dumps(content))


def write_learnable_mnist(root: Path, n_train: int = 200, n_test: int = 40, seed: int = 0) -> None:
    """MNIST IDX files whose class is where a bright block sits, so one short training learns them."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(count) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 60, (count, 28, 28), dtype=np.uint8)
        for image, label in zip(images, labels):
            row, col = divmod(int(label), 4)
            image[2 + 8 * row: 8 + 8 * row, 1 + 7 * col: 6 + 7 * col] = 255
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz=True)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz=True)
