"""The data package: format readers, file search, downloads, validation split and tensor loader."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import logging
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import fakedata
from n2n.data import (
    DatasetInfo,
    Split,
    TensorLoader,
    get_dataset_info,
    list_datasets,
    load_dataset,
    normalise,
    register_dataset,
)
from n2n.data import locate, registry
from n2n.data.download import DownloadSpec, RemoteFile, download_file, extract_tarball, fetch
from n2n.data.loader import black_pixel, random_crop, random_hflip
from n2n.data.splitting import hold_out, stratified_mask, validation_size
from n2n.errors import ConfigError, DataError

BUILTINS = ["caltech256", "cifar10", "cifar100", "fashion-mnist", "imagenet32", "mnist", "svhn"]


@pytest.fixture(autouse=True)
def isolated_search(tmp_path_factory, monkeypatch):
    """No test reads the real cache or system folders, or reaches the network."""
    monkeypatch.setenv("N2N_DATA_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setattr(locate, "SYSTEM_ROOT", tmp_path_factory.mktemp("system"))
    monkeypatch.delenv(locate.MIRROR_VARIABLE, raising=False)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tree_snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, md5(p)) for p in sorted(root.rglob("*")) if p.is_file()}


def assert_split_equals(split: Split, images: np.ndarray, labels: np.ndarray) -> None:
    assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
    np.testing.assert_array_equal(split.images.numpy(), images)
    np.testing.assert_array_equal(split.labels.numpy(), labels)


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_builtin_data_set():
    assert list_datasets() == BUILTINS


@pytest.mark.parametrize(
    "name, channels, classes, size, crop, flip",
    [
        ("mnist", 1, 10, 28, 0, False),
        ("fashion-mnist", 1, 10, 28, 2, True),
        ("cifar10", 3, 10, 32, 4, True),
        ("cifar100", 3, 100, 32, 4, True),
        ("svhn", 3, 10, 32, 4, False),
        ("caltech256", 3, 256, 32, 4, True),
        ("imagenet32", 3, 1000, 32, 4, True),
    ],
)
def test_dataset_info_describes_shapes_and_augmentation(name, channels, classes, size, crop, flip):
    info = get_dataset_info(name)
    assert (info.name, info.in_channels, info.num_classes, info.image_size) == (name, channels, classes, size)
    assert (info.crop_padding, info.hflip) == (crop, flip)
    assert len(info.mean) == len(info.std) == channels
    assert info.files_hint


def test_dataset_info_statistics():
    assert get_dataset_info("mnist").mean == (0.1307,) and get_dataset_info("mnist").std == (0.3081,)
    assert get_dataset_info("fashion-mnist").mean == (0.2860,)
    assert get_dataset_info("cifar10").std == (0.2470, 0.2435, 0.2616)
    assert get_dataset_info("imagenet32").mean == (0.485, 0.456, 0.406)


def test_names_are_matched_ignoring_case_and_underscores():
    assert get_dataset_info("Fashion_MNIST").name == "fashion-mnist"


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError, match="cifar11") as caught:
        get_dataset_info("cifar11")
    assert all(name in str(caught.value) for name in BUILTINS)
    with pytest.raises(DataError, match="nope"):
        load_dataset("nope")


def test_register_custom_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_SOURCES", dict(registry._SOURCES))
    info = DatasetInfo("toy", 1, 2, 4, (0.5,), (0.25,), 0, False, "Put toy.npy in the data folder.")

    def read_toy(root: Path):
        images = torch.from_numpy(np.load(root / "toy.npy"))
        return Split(images, torch.tensor([0, 1, 0, 1])), Split(images[:2].clone(), torch.tensor([1, 0]))

    np.save(tmp_path / "toy.npy", fakedata.random_images(4, 1, 4, seed=3))
    register_dataset("toy", info, read_toy, check_files=lambda root: {"toy.npy": (root / "toy.npy").is_file()})
    assert "toy" in list_datasets()
    data = load_dataset("toy", tmp_path, val_fraction=0.5)
    assert (len(data.train), len(data.val), len(data.test)) == (2, 2, 2)
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("toy", info, read_toy)
    with pytest.raises(ConfigError, match="differs"):
        register_dataset("other", info, read_toy)


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_round_trip(tmp_path, gz):
    (train_x, train_y), (test_x, test_y) = fakedata.write_mnist(tmp_path, gz=gz)
    data = load_dataset("mnist", tmp_path, val_fraction=0, download=False)
    assert data.train.images.shape == (40, 1, 28, 28) and data.test.images.shape == (10, 1, 28, 28)
    assert_split_equals(data.train, train_x, train_y)
    assert_split_equals(data.test, test_x, test_y)
    assert len(data.val) == 0


def test_idx_in_subfolder_named_after_data_set(tmp_path):
    (train_x, _), _ = fakedata.write_mnist(tmp_path / "fashion-mnist", gz=True)
    data = load_dataset("fashion-mnist", tmp_path, val_fraction=0, download=False)
    np.testing.assert_array_equal(data.train.images.numpy(), train_x)
    assert data.info.name == "fashion-mnist"


def test_cifar10_round_trip(tmp_path):
    (train_x, train_y), (test_x, test_y) = fakedata.write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, val_fraction=0, download=False)
    assert data.train.images.shape == (30, 3, 32, 32)
    assert_split_equals(data.train, train_x, train_y)  # batches 1..5 in order, CHW layout
    assert_split_equals(data.test, test_x, test_y)


def test_cifar10_reads_numpy1_style_pickles(tmp_path):
    """The official files name numpy.core.multiarray (Python 2 / NumPy 1 pickles)."""
    fakedata.write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert len(load_dataset("cifar10", tmp_path, download=False).test) == 8


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_cifar_batches_of_every_pickle_protocol(tmp_path, protocol):
    _, (test_x, test_y) = fakedata.write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(fakedata.cifar_batch_bytes(test_x, test_y, protocol))
    assert_split_equals(load_dataset("cifar10", tmp_path, val_fraction=0, download=False).test, test_x, test_y)


def test_cifar100_uses_fine_labels(tmp_path):
    (train_x, train_y), (test_x, test_y) = fakedata.write_cifar100(tmp_path)
    data = load_dataset("cifar100", tmp_path, val_fraction=0, download=False)
    assert_split_equals(data.train, train_x, train_y)
    assert_split_equals(data.test, test_x, test_y)


def test_svhn_maps_label_10_to_digit_0(tmp_path):
    (train_x, train_y), (test_x, test_y) = fakedata.write_svhn(tmp_path)
    data = load_dataset("svhn", tmp_path, val_fraction=0, download=False)
    assert data.train.images.shape == (12, 3, 32, 32)
    assert_split_equals(data.train, train_x, train_y)
    assert_split_equals(data.test, test_x, test_y)
    assert int(data.train.labels[0]) == 0 and int(data.train.labels.max()) <= 9


def test_caltech256_tree(tmp_path):
    fakedata.write_caltech256(tmp_path, counts=(5, 3, 1))
    data = load_dataset("caltech256", tmp_path, val_fraction=0, download=False)
    assert data.train.images.shape[1:] == (3, 32, 32) and data.train.images.dtype == torch.uint8
    # Class 0: 5 colour + 1 grey image -> 1 test (20 %); class 1: 3 -> 1 test; class 2: 1 -> train only.
    # 257.clutter and notes.txt are left out.
    assert torch.bincount(data.test.labels, minlength=3).tolist() == [1, 1, 0]
    assert torch.bincount(data.train.labels, minlength=3).tolist() == [5, 2, 1]
    for split in (data.train, data.test):
        for image, label in zip(split.images, split.labels):
            pixels = image.reshape(3, -1).float().mean(1)
            expected = torch.tensor(fakedata.CALTECH_COLOURS[int(label)], dtype=torch.float)
            grey = torch.tensor([77.0, 77.0, 77.0])
            assert (pixels - expected).abs().max() < 6 or (pixels - grey).abs().max() < 6


def test_caltech256_ignores_hidden_files(tmp_path):
    names = fakedata.write_caltech256(tmp_path, counts=(2, 2), with_clutter=False)
    (tmp_path / "256_ObjectCategories" / names[0] / "._001_0001.jpg").write_bytes(b"metadata, not a jpeg")
    (tmp_path / "256_ObjectCategories" / ".hidden").mkdir()
    data = load_dataset("caltech256", tmp_path, val_fraction=0, download=False)
    assert len(data.train) + len(data.test) == 5 and int(data.train.labels.max()) <= 1


def test_caltech256_split_is_fixed(tmp_path):
    fakedata.write_caltech256(tmp_path, counts=(6, 4))
    first = load_dataset("caltech256", tmp_path, val_fraction=0, seed=1, download=False)
    second = load_dataset("caltech256", tmp_path, val_fraction=0, seed=2, download=False)
    assert torch.equal(first.test.images, second.test.images)


@pytest.mark.parametrize("npz", [False, True], ids=["pickle", "npz"])
def test_imagenet32_round_trip_with_zero_based_labels(tmp_path, npz, caplog):
    (train_x, train_y), (val_x, val_y) = fakedata.write_imagenet32(tmp_path, n_batches=3, npz=npz)
    with caplog.at_level(logging.INFO, logger="n2n.data"):
        data = load_dataset("imagenet32", tmp_path, val_fraction=0, download=False)
    assert_split_equals(data.train, train_x, train_y)
    assert_split_equals(data.test, val_x, val_y)
    assert "3 training batches" in caplog.text


def test_imagenet32_official_subfolders(tmp_path):
    (train_x, _), _ = fakedata.write_imagenet32(tmp_path / "Imagenet32_train", n_batches=2)
    (tmp_path / "Imagenet32_train" / "val_data").rename(tmp_path / "val_data")
    data = load_dataset("imagenet32", tmp_path, val_fraction=0, download=False)
    np.testing.assert_array_equal(data.train.images.numpy(), train_x)


def test_imagenet32_rejects_gap_in_batch_numbers(tmp_path):
    fakedata.write_imagenet32(tmp_path, n_batches=3)
    (tmp_path / "train_data_batch_2").unlink()
    with pytest.raises(DataError, match="train_data_batch_2 is missing"):
        load_dataset("imagenet32", tmp_path, download=False)


# --------------------------------------------------------------------------- search order


def test_system_folder_is_searched(tmp_path):
    (train_x, _), _ = fakedata.write_mnist(locate.SYSTEM_ROOT / "mnist", gz=True)
    data = load_dataset("mnist", val_fraction=0, download=False)
    np.testing.assert_array_equal(data.train.images.numpy(), train_x)


def test_data_dir_comes_before_system_folder_and_cache(tmp_path):
    fakedata.write_mnist(locate.SYSTEM_ROOT / "mnist", seed=1)
    fakedata.write_mnist(locate.cache_root() / "mnist", seed=2)
    (train_x, _), _ = fakedata.write_mnist(tmp_path / "mine", seed=3)
    data = load_dataset("mnist", tmp_path / "mine", val_fraction=0, download=False)
    np.testing.assert_array_equal(data.train.images.numpy(), train_x)


def test_subfolder_named_after_data_set_wins_over_direct_files(tmp_path):
    """MNIST and Fashion-MNIST share file names: data_dir/fashion-mnist/ must beat MNIST files in data_dir."""
    fakedata.write_mnist(tmp_path, seed=1)
    (fashion_x, _), _ = fakedata.write_mnist(tmp_path / "fashion-mnist", seed=2)
    data = load_dataset("fashion-mnist", tmp_path, val_fraction=0, download=False)
    np.testing.assert_array_equal(data.train.images.numpy(), fashion_x)


def test_cache_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("N2N_DATA_DIR", str(tmp_path / "cache"))
    (train_x, _), _ = fakedata.write_mnist(tmp_path / "cache" / "mnist")
    data = load_dataset("mnist", val_fraction=0, download=False)
    np.testing.assert_array_equal(data.train.images.numpy(), train_x)


def test_reading_never_changes_user_files(tmp_path):
    fakedata.write_cifar10(tmp_path)
    before = tree_snapshot(tmp_path)
    load_dataset("cifar10", tmp_path, download=False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"broken")
    before = tree_snapshot(tmp_path)
    with pytest.raises(DataError):
        load_dataset("cifar10", tmp_path, download=False)
    assert tree_snapshot(tmp_path) == before


# --------------------------------------------------------------------------- errors


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist") as caught:
        load_dataset("mnist", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(caught.value)


def test_data_set_not_found_says_where_and_what(tmp_path):
    with pytest.raises(DataError) as caught:
        load_dataset("cifar10", tmp_path, download=False)
    message = str(caught.value)
    assert "cifar10" in message and str(tmp_path) in message and str(locate.cache_root()) in message
    assert "cifar-10-batches-py" in message and "\n" not in message


def test_partial_copy_names_the_missing_file(tmp_path):
    fakedata.write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path, download=False)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_truncated_idx(tmp_path, gz):
    fakedata.write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = path.read_bytes()[:-100]
    if gz:
        path.unlink()
        path = tmp_path / "train-images-idx3-ubyte.gz"
        data = gzip.compress(data)
    path.write_bytes(data)
    with pytest.raises(DataError, match="truncated") as caught:
        load_dataset("mnist", tmp_path, download=False)
    assert str(path) in str(caught.value)


def test_cut_gzip_stream(tmp_path):
    fakedata.write_mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", tmp_path, download=False)


@pytest.mark.parametrize("name", ["train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"])
def test_garbage_bytes_as_idx(tmp_path, name):
    fakedata.write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    (tmp_path / name).write_bytes(os.urandom(500))
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", tmp_path, download=False)
    assert str(tmp_path / name) in str(caught.value)


def test_idx_with_images_and_labels_of_different_counts(tmp_path):
    fakedata.write_mnist(tmp_path)
    fakedata.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    with pytest.raises(DataError, match="40 images but 7 labels"):
        load_dataset("mnist", tmp_path, download=False)


def test_wrong_image_size_for_data_set(tmp_path):
    fakedata.write_mnist(tmp_path, size=32)
    with pytest.raises(DataError, match=r"expected \(1, 28, 28\)"):
        load_dataset("mnist", tmp_path, download=False)


def test_labels_out_of_range(tmp_path):
    fakedata.write_mnist(tmp_path)
    fakedata.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(10, 12, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels 12\.\.12, expected 0\.\.9"):
        load_dataset("mnist", tmp_path, download=False)


def test_pickle_without_expected_keys(tmp_path):
    fakedata.write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DataError, match="no 'labels' entry") as caught:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(path) in str(caught.value)


def test_garbage_bytes_as_pickle(tmp_path):
    fakedata.write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    path.write_bytes(b"\x00not a pickle" * 10)
    with pytest.raises(DataError, match="not a CIFAR python batch") as caught:
        load_dataset("cifar100", tmp_path, download=False)
    assert str(path) in str(caught.value)


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, ("/tmp/n2n-pickle-exploit-ran",))


def test_pickle_cannot_run_code(tmp_path):
    fakedata.write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit()}))
    with pytest.raises(DataError, match="refusing to load posix.mkdir"):
        load_dataset("cifar10", tmp_path, download=False)
    assert not Path("/tmp/n2n-pickle-exploit-ran").exists()


def test_pickle_data_of_wrong_shape(tmp_path):
    fakedata.write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"N x 3072 uint8"):
        load_dataset("cifar10", tmp_path, download=False)


def test_garbage_svhn_mat(tmp_path):
    fakedata.write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(os.urandom(300))
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_dataset("svhn", tmp_path, download=False)


def test_svhn_mat_without_images(tmp_path):
    from scipy.io import savemat

    fakedata.write_svhn(tmp_path)
    savemat(str(tmp_path / "train_32x32.mat"), {"y": np.ones((3, 1))})
    with pytest.raises(DataError, match="no 'X' variable"):
        load_dataset("svhn", tmp_path, download=False)


def test_broken_caltech_image(tmp_path):
    names = fakedata.write_caltech256(tmp_path, counts=(3, 2))
    broken = tmp_path / "256_ObjectCategories" / names[1] / "002_0009.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="002_0009.jpg"):
        load_dataset("caltech256", tmp_path, download=False)


def test_garbage_imagenet32_npz(tmp_path):
    fakedata.write_imagenet32(tmp_path, npz=True)
    (tmp_path / "val_data.npz").write_bytes(os.urandom(200))
    with pytest.raises(DataError, match="val_data.npz"):
        load_dataset("imagenet32", tmp_path, download=False)


def test_imagenet32_zero_based_labels_are_refused(tmp_path):
    fakedata.write_imagenet32(tmp_path)
    images = fakedata.random_images(2, 3, 32, seed=5)
    (tmp_path / "val_data").write_bytes(pickle.dumps({"data": images.reshape(2, -1), "labels": [0, 3]}))
    with pytest.raises(DataError, match="numbered from 1"):
        load_dataset("imagenet32", tmp_path, download=False)


@pytest.mark.parametrize("options", [{"val_fraction": 1.0}, {"val_fraction": -0.1}, {"limit": 0}, {"limit": 2.5}])
def test_bad_options(tmp_path, options):
    fakedata.write_mnist(tmp_path)
    with pytest.raises(ConfigError):
        load_dataset("mnist", tmp_path, download=False, **options)


# --------------------------------------------------------------------------- validation split


def identity_split(n: int, num_classes: int, seed: int = 0) -> Split:
    """Image i stores i in its first two pixels, so samples can be traced through a split."""
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) // 256
    images[:, 0, 0, 1] = torch.arange(n) % 256
    return Split(images, torch.from_numpy(fakedata.random_labels(n, num_classes, seed)))


def sample_ids(split: Split) -> set[int]:
    return set((split.images[:, 0, 0, 0].long() * 256 + split.images[:, 0, 0, 1].long()).tolist())


def test_validation_split_sizes_and_no_overlap():
    split = identity_split(1000, 10)
    train, val = hold_out(split, 0.1, seed=0)
    assert (len(train), len(val)) == (900, 100)
    assert sample_ids(train).isdisjoint(sample_ids(val))
    assert sample_ids(train) | sample_ids(val) == set(range(1000))
    # Labels travel with their images.
    ids = torch.tensor(sorted(sample_ids(val)))
    assert torch.equal(val.labels, split.labels[ids])


def test_validation_split_is_stratified():
    split = identity_split(2000, 5)
    _, val = hold_out(split, 0.2, seed=3)
    expected = torch.bincount(split.labels).double() * 0.2
    assert (torch.bincount(val.labels, minlength=5).double() - expected).abs().max() <= 1


def test_validation_split_depends_only_on_seed():
    split = identity_split(500, 10)
    first, second, other = (hold_out(split, 0.1, seed=s)[1] for s in (7, 7, 8))
    assert sample_ids(first) == sample_ids(second)
    assert sample_ids(first) != sample_ids(other)


@pytest.mark.parametrize(
    "total, fraction, expected",
    [(10, 0.1, 1), (5, 0.1, 1), (1, 0.5, 0), (10, 0.0, 0), (3, 0.99, 2), (60000, 0.1, 6000)],
)
def test_validation_size(total, fraction, expected):
    assert validation_size(total, fraction) == expected


def test_stratified_mask_with_rare_classes():
    labels = torch.tensor([0] * 97 + [1, 2, 3])
    mask = stratified_mask(labels, 10, seed=0)
    assert int(mask.sum()) == 10


def test_load_dataset_split_and_limit(tmp_path):
    (train_x, _), (test_x, _) = fakedata.write_mnist(tmp_path, n_train=40, n_test=10)
    data = load_dataset("mnist", tmp_path, val_fraction=0.25, seed=1, limit=20, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (15, 5, 10)
    np.testing.assert_array_equal(data.test.images.numpy(), test_x[:10])
    kept = {img.tobytes() for img in train_x[:20]}
    seen = [img.tobytes() for img in np.concatenate([data.train.images.numpy(), data.val.images.numpy()])]
    assert sorted(seen) == sorted(kept)
    again = load_dataset("mnist", tmp_path, val_fraction=0.25, seed=1, limit=20, download=False)
    assert torch.equal(again.val.images, data.val.images)


# --------------------------------------------------------------------------- loader

TOY = DatasetInfo("toy", 3, 10, 8, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5), 0, False, "")


def toy_split(n: int = 50, seed: int = 0) -> Split:
    return Split(torch.from_numpy(fakedata.random_images(n, 3, 8, seed)), torch.arange(n) % 10)


def test_loader_batches_and_normalisation():
    split = toy_split(50)
    loader = TensorLoader(split, TOY, batch_size=16)
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    assert [b[0].shape[0] for b in batches] == [16, 16, 16, 2]
    images = torch.cat([b[0] for b in batches])
    assert images.dtype == torch.float32 and images.shape == (50, 3, 8, 8)
    mean = torch.tensor(TOY.mean).view(1, 3, 1, 1)
    std = torch.tensor(TOY.std).view(1, 3, 1, 1)
    torch.testing.assert_close(images, (split.images.float() / 255 - mean) / std)
    torch.testing.assert_close(images, normalise(split.images, TOY))
    assert torch.equal(torch.cat([b[1] for b in batches]), split.labels)


def test_loader_drop_last_and_indices():
    loader = TensorLoader(toy_split(50), TOY, batch_size=16, drop_last=True, shuffle=True, with_indices=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert all(b[0].shape[0] == 16 for b in batches)
    for images, labels, indices in batches:
        assert torch.equal(labels, indices % 10)


def test_shuffle_visits_each_sample_once_per_epoch_in_new_order():
    loader = TensorLoader(toy_split(50), TOY, batch_size=8, shuffle=True, seed=4)
    first = torch.cat([labels for _, labels in loader])
    second = torch.cat([labels for _, labels in loader])
    expected = (torch.arange(50) % 10).sort().values
    assert torch.equal(first.sort().values, expected) and torch.equal(second.sort().values, expected)
    with_indices = TensorLoader(toy_split(50), TOY, 8, shuffle=True, seed=4, with_indices=True)
    order_first = torch.cat([indices for _, _, indices in with_indices])
    assert not torch.equal(order_first, torch.arange(50))


def run_epochs(loader: TensorLoader, epochs: int) -> list[torch.Tensor]:
    return [images for _ in range(epochs) for images, _ in loader]


def test_loader_is_deterministic_by_seed():
    info = dataclasses.replace(TOY, crop_padding=2, hflip=True)
    make = lambda seed: TensorLoader(toy_split(40), info, 16, shuffle=True, augment=True, seed=seed)  # noqa: E731
    first, second, other = run_epochs(make(1), 2), run_epochs(make(1), 2), run_epochs(make(2), 2)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert not torch.equal(first[0], first[3])  # epoch 2 differs from epoch 1
    replay = make(1)
    replay.set_epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(run_epochs(replay, 1), first[3:]))


def test_flip_only_augmentation_mirrors_or_keeps_each_image():
    info = dataclasses.replace(TOY, crop_padding=0, hflip=True)
    split = toy_split(64)
    plain = normalise(split.images, info)
    augmented = torch.cat([x for x, _ in TensorLoader(split, info, 64, augment=True)])
    kept = (augmented == plain).flatten(1).all(1)
    mirrored = (augmented == plain.flip(3)).flatten(1).all(1)
    assert bool((kept | mirrored).all()) and kept.any() and mirrored.any()
    torch.testing.assert_close(augmented.flip(3).flip(3), augmented)


def test_random_hflip_twice_with_same_draws_is_identity():
    batch = torch.rand(32, 3, 8, 8)
    once = random_hflip(batch, torch.Generator().manual_seed(5))
    twice = random_hflip(once, torch.Generator().manual_seed(5))
    assert torch.equal(twice, batch) and not torch.equal(once, batch)


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    batch = torch.rand(40, 3, 6, 6)
    padding = 2
    cropped = random_crop(batch, padding, torch.Generator().manual_seed(0))
    assert cropped.shape == batch.shape
    padded = torch.nn.functional.pad(batch, (padding,) * 4)
    windows = padded.unfold(2, 6, 1).unfold(3, 6, 1)  # N x C x 5 x 5 x 6 x 6: every offset
    offsets_used = set()
    for i in range(40):
        matches = (windows[i] == cropped[i][:, None, None]).flatten(3).all(3).all(0).nonzero().tolist()
        assert matches, f"sample {i} is not a window of its padded image"
        offsets_used.add(tuple(matches[0]))
    assert len(offsets_used) > 5


def test_random_crop_pads_each_channel_with_its_fill():
    batch = torch.full((64, 2, 5, 5), 3.0)
    fill = torch.tensor([-1.0, -2.0]).view(1, 2, 1, 1)
    cropped = random_crop(batch, 2, torch.Generator().manual_seed(0), fill)
    for channel, value in enumerate((-1.0, -2.0)):
        seen = set(cropped[:, channel].unique().tolist())
        assert seen == {3.0, value}  # the image, and the channel's own fill where the window left it


def test_black_pixel_is_zero_after_undoing_the_normalisation():
    info = dataclasses.replace(TOY, mean=(0.5, 0.25), std=(0.5, 0.25), in_channels=2)
    assert black_pixel(info) == (-1.0, -1.0)
    for value, mean, std in zip(black_pixel(TOY), TOY.mean, TOY.std):
        assert value * std + mean == pytest.approx(0.0)


def test_crop_of_constant_image_stays_constant_inside():
    info = dataclasses.replace(TOY, crop_padding=3, hflip=True)
    split = Split(torch.full((30, 3, 8, 8), 200, dtype=torch.uint8), torch.zeros(30, dtype=torch.long))
    images = torch.cat([x for x, _ in TensorLoader(split, info, 30, augment=True, seed=3)])
    value = normalise(split.images[:1], info)[0, :, 0, 0].view(1, 3, 1)
    black = normalise(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), info)[0, :, 0, 0].view(1, 3, 1)
    inner = images[:, :, 3:5, 3:5]  # inside every possible window: always original pixels
    torch.testing.assert_close(inner, value[..., None].expand_as(inner))
    flat = images.flatten(2)
    is_value = torch.isclose(flat, value).all(1)
    is_black = torch.isclose(flat, black).all(1)
    assert bool((is_value | is_black).all()) and is_black.any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loader_on_gpu_gives_the_cpu_batches():
    info = dataclasses.replace(TOY, crop_padding=2, hflip=True)
    options = dict(batch_size=16, shuffle=True, augment=True, seed=9)
    on_cpu = run_epochs(TensorLoader(toy_split(40), info, **options), 2)
    on_gpu = run_epochs(TensorLoader(toy_split(40), info, device="cuda", **options), 2)
    assert all(b.device.type == "cuda" for b in on_gpu)
    for a, b in zip(on_cpu, on_gpu):
        torch.testing.assert_close(a, b.cpu())


def test_loader_rejects_bad_input():
    with pytest.raises(ConfigError, match="batch_size"):
        TensorLoader(toy_split(), TOY, batch_size=0)
    with pytest.raises(DataError, match="uint8"):
        TensorLoader(Split(torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)), TOY)
    with pytest.raises(DataError, match="N x 3"):
        normalise(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), TOY)


# --------------------------------------------------------------------------- downloads


def file_url(folder: Path) -> str:
    return folder.as_uri() + "/"


def served_mnist(tmp_path: Path) -> Path:
    served = tmp_path / "served"
    fakedata.write_mnist(served, gz=True)
    return served


def test_download_with_right_checksum(tmp_path):
    served = served_mnist(tmp_path)
    source = served / "train-images-idx3-ubyte.gz"
    target = tmp_path / "cache" / "train-images-idx3-ubyte.gz"
    download_file(file_url(served) + source.name, target, md5=md5(source))
    assert target.read_bytes() == source.read_bytes()
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    download_file(file_url(served) + source.name, target, sha256=sha)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_download_with_wrong_checksum_leaves_nothing(tmp_path):
    served = served_mnist(tmp_path)
    target = tmp_path / "cache" / "train-images-idx3-ubyte.gz"
    with pytest.raises(DataError, match="Checksum mismatch"):
        download_file(file_url(served) + target.name, target, md5="0" * 32)
    assert list(target.parent.iterdir()) == []


def test_download_without_checksum_warns(tmp_path, caplog):
    served = served_mnist(tmp_path)
    with caplog.at_level(logging.WARNING, logger="n2n.data"):
        download_file(file_url(served) + "t10k-labels-idx1-ubyte.gz", tmp_path / "out" / "labels.gz")
    assert "No checksum" in caplog.text


def test_unreachable_download(tmp_path):
    spec = DownloadSpec((file_url(tmp_path / "empty"),), (RemoteFile("missing.gz", md5="0" * 32),))
    with pytest.raises(DataError, match="Could not download missing.gz"):
        fetch(spec, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_stale_partial_downloads_are_cleaned(tmp_path):
    served = served_mnist(tmp_path)
    name = "t10k-labels-idx1-ubyte.gz"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f".{name}.abc123.part").write_bytes(b"half a file")
    fetch(DownloadSpec((file_url(served),), (RemoteFile(name, md5=md5(served / name)),)), cache)
    assert [p.name for p in cache.iterdir()] == [name]


def test_failed_download_says_where_files_go(tmp_path, monkeypatch):
    monkeypatch.setenv(locate.MIRROR_VARIABLE, file_url(tmp_path / "empty"))
    with pytest.raises(DataError, match="Could not download.*svhn/ sub-folder"):
        load_dataset("svhn")


def test_official_checksums_reject_a_fake_mirror(tmp_path, monkeypatch):
    """The real MNIST spec with a mirror: fake files fail verification and are not kept."""
    monkeypatch.setenv(locate.MIRROR_VARIABLE, file_url(served_mnist(tmp_path)))
    with pytest.raises(DataError, match="Checksum mismatch"):
        load_dataset("mnist", download=True)
    assert [p for p in locate.cache_root().rglob("*") if p.is_file()] == []


def test_load_dataset_downloads_into_cache(tmp_path, monkeypatch):
    served = served_mnist(tmp_path)
    files = tuple(RemoteFile(p.name, md5=md5(p)) for p in sorted(served.iterdir()))
    source = dataclasses.replace(registry._SOURCES["mnist"], download=DownloadSpec((file_url(served),), files))
    monkeypatch.setitem(registry._SOURCES, "mnist", source)
    data = load_dataset("mnist", download=True, val_fraction=0)
    assert len(data.train) == 40
    cached = sorted(p.name for p in (locate.cache_root() / "mnist").iterdir())
    assert cached == sorted(p.name for p in served.iterdir())
    with pytest.raises(DataError, match="not found"):  # without download, an empty cache is an error
        load_dataset("cifar10", download=False)


def make_tarball(path: Path, folder: Path, arcname: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return path


def test_download_extracts_cifar_tarball(tmp_path, monkeypatch):
    (train_x, _), _ = fakedata.write_cifar10(tmp_path / "build")
    served = tmp_path / "served"
    served.mkdir()
    folder = tmp_path / "build" / "cifar-10-batches-py"
    archive = make_tarball(served / "cifar-10-python.tar.gz", folder, "cifar-10-batches-py")
    spec = DownloadSpec((file_url(served),), (RemoteFile(archive.name, md5=md5(archive), extract=True),))
    monkeypatch.setitem(registry._SOURCES, "cifar10", dataclasses.replace(registry._SOURCES["cifar10"], download=spec))
    data = load_dataset("cifar10", val_fraction=0)
    np.testing.assert_array_equal(data.train.images.numpy(), train_x)
    cache = locate.cache_root() / "cifar10"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py"]  # archive removed


def test_tarball_with_unsafe_member_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="Cannot unpack"):
        extract_tarball(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


# --------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_fashion_mnist(fashion_mnist_root):
    data = load_dataset("fashion-mnist", fashion_mnist_root, download=False)
    assert len(data.train) + len(data.val) == 60000 and len(data.val) == 6000
    assert len(data.test) == 10000
    assert data.train.images.shape[1:] == (1, 28, 28) and data.train.images.dtype == torch.uint8
    assert set(data.test.labels.unique().tolist()) == set(range(10))
    assert torch.bincount(data.val.labels).tolist() == [600] * 10  # stratified on a balanced set
    pixels = data.train.images.float() / 255
    assert abs(pixels.mean().item() - data.info.mean[0]) < 0.01
    assert abs(pixels.std().item() - data.info.std[0]) < 0.01

