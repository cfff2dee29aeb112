"""The built-in data sets: their facts, readers, standard files and public download addresses.

Checksums are the MD5 sums published with each data set (the same ones the
torchvision and Fashion-MNIST projects verify against).
"""

from __future__ import annotations

from n2n.data.download import DownloadSpec, RemoteFile
from n2n.data.formats.caltech import check_caltech_files, read_caltech256
from n2n.data.formats.cifar import check_cifar10_files, check_cifar100_files, read_cifar10, read_cifar100
from n2n.data.formats.idx import check_idx_files, read_idx_pair
from n2n.data.formats.imagenet32 import check_imagenet32_files, read_imagenet32
from n2n.data.formats.svhn import check_svhn_files, read_svhn
from n2n.data.structures import DatasetInfo, DatasetSource

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_IDX_HINT = (
    "Put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte (each plain or .gz) directly in the data folder or in its {name}/ sub-folder."
)


def _idx_download(base_urls: tuple[str, ...], md5s: tuple[str, str, str, str]) -> DownloadSpec:
    names = (
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
    )
    return DownloadSpec(base_urls, tuple(RemoteFile(n, md5=m) for n, m in zip(names, md5s)))


MNIST = DatasetSource(
    info=DatasetInfo(
        name="mnist", in_channels=1, num_classes=10, image_size=28,
        mean=(0.1307,), std=(0.3081,), crop_padding=0, hflip=False,
        files_hint=_IDX_HINT.format(name="mnist"),
    ),
    reader=read_idx_pair,
    check_files=check_idx_files,
    download=_idx_download(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
         "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
)

FASHION_MNIST = DatasetSource(
    info=DatasetInfo(
        name="fashion-mnist", in_channels=1, num_classes=10, image_size=28,
        mean=(0.2860,), std=(0.3530,), crop_padding=2, hflip=True,
        files_hint=_IDX_HINT.format(name="fashion-mnist"),
    ),
    reader=read_idx_pair,
    check_files=check_idx_files,
    download=_idx_download(
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
         "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
)

CIFAR10 = DatasetSource(
    info=DatasetInfo(
        name="cifar10", in_channels=3, num_classes=10, image_size=32,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), crop_padding=4, hflip=True,
        files_hint="Unpack cifar-10-python.tar.gz so that cifar-10-batches-py/ (data_batch_1..5, test_batch) "
        "sits in the data folder or in its cifar10/ sub-folder.",
    ),
    reader=read_cifar10,
    check_files=check_cifar10_files,
    download=DownloadSpec(
        ("https://www.cs.toronto.edu/~kriz/",),
        (RemoteFile("cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a", extract=True),),
    ),
)

CIFAR100 = DatasetSource(
    info=DatasetInfo(
        name="cifar100", in_channels=3, num_classes=100, image_size=32,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), crop_padding=4, hflip=True,
        files_hint="Unpack cifar-100-python.tar.gz so that cifar-100-python/ (train, test) "
        "sits in the data folder or in its cifar100/ sub-folder.",
    ),
    reader=read_cifar100,
    check_files=check_cifar100_files,
    download=DownloadSpec(
        ("https://www.cs.toronto.edu/~kriz/",),
        (RemoteFile("cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85", extract=True),),
    ),
)

SVHN = DatasetSource(
    info=DatasetInfo(
        name="svhn", in_channels=3, num_classes=10, image_size=32,
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), crop_padding=4, hflip=False,
        files_hint="Put train_32x32.mat and test_32x32.mat (SVHN cropped digits) in the data folder "
        "or in its svhn/ sub-folder.",
    ),
    reader=read_svhn,
    check_files=check_svhn_files,
    download=DownloadSpec(
        ("http://ufldl.stanford.edu/housenumbers/",),
        (
            RemoteFile("train_32x32.mat", md5="e26dedcc434d2e4c54c9b2d4a06d8373"),
            RemoteFile("test_32x32.mat", md5="eb5a983be6a315427106f1b164d9cef3"),
        ),
    ),
)

CALTECH256 = DatasetSource(
    info=DatasetInfo(
        name="caltech256", in_channels=3, num_classes=256, image_size=32,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_padding=4, hflip=True,
        files_hint="Unpack 256_ObjectCategories.tar so that 256_ObjectCategories/ (001.ak47/ ... 256.toad/) "
        "sits in the data folder or in its caltech256/ sub-folder.",
    ),
    reader=read_caltech256,
    check_files=check_caltech_files,
)

IMAGENET32 = DatasetSource(
    info=DatasetInfo(
        name="imagenet32", in_channels=3, num_classes=1000, image_size=32,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_padding=4, hflip=True,
        files_hint="Put the downsampled-ImageNet 32x32 files train_data_batch_1..10 and val_data "
        "(pickles or .npz) in the data folder or in its imagenet32/ sub-folder.",
    ),
    reader=read_imagenet32,
    check_files=check_imagenet32_files,
)

BUILTIN_SOURCES = (MNIST, FASHION_MNIST, CIFAR10, CIFAR100, SVHN, CALTECH256, IMAGENET32)
