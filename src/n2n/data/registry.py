"""Name -> data set registry, and ``load_dataset``: find, read, check and split a data set."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import torch

from n2n.data.catalogue import BUILTIN_SOURCES
from n2n.data.download import DownloadSpec
from n2n.data.locate import find_data_root
from n2n.data.splitting import hold_out
from n2n.data.structures import DatasetInfo, DatasetSource, DataSplits, FileCheck, Reader, Split
from n2n.errors import ConfigError, DataError

__all__ = [
    "DatasetInfo", "Split", "DataSplits", "register_dataset", "list_datasets", "get_dataset_info", "load_dataset",
]

logger = logging.getLogger(__name__)

_SOURCES: dict[str, DatasetSource] = {source.info.name: source for source in BUILTIN_SOURCES}


def register_dataset(
    name: str,
    info: DatasetInfo,
    reader: Reader,
    *,
    check_files: FileCheck | None = None,
    download: DownloadSpec | None = None,
    replace: bool = False,
) -> None:
    """Make ``load_dataset(name)`` work for a new data set.

    ``reader(root) -> (train, test)`` reads the standard files from a folder.
    ``check_files(root) -> {file: present}`` lets the search tell a folder that
    holds the data set from one that does not (without it, any existing folder
    is taken). ``download`` lists the public files to fetch into the cache.
    """
    if name != info.name:
        raise ConfigError(f"register_dataset: name {name!r} differs from info.name {info.name!r}.")
    if name in _SOURCES and not replace:
        raise ConfigError(f"A data set named {name} is already registered; pass replace=True to override it.")
    _SOURCES[name] = DatasetSource(info=info, reader=reader, check_files=check_files, download=download)


def list_datasets() -> list[str]:
    """Names of every registered data set, sorted."""
    return sorted(_SOURCES)


def get_dataset_info(name: str) -> DatasetInfo:
    """Shapes, classes, normalisation and augmentation of data set ``name`` (no files read)."""
    return _source(name).info


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = True,
    limit: int | None = None,
) -> DataSplits:
    """Read data set ``name`` and hold out ``val_fraction`` of its training set for validation.

    The validation split is stratified by class and fixed by ``seed``. ``limit``
    keeps only the first ``limit`` training and test samples (before the split),
    for quick runs.
    """
    _check_options(val_fraction, limit)
    source = _source(name)
    info = source.info
    root = find_data_root(info.name, source, data_dir, download)
    train, test = source.reader(root)
    for split_name, split in (("train", train), ("test", test)):
        _check_split(info, split, split_name, root)
    if limit is not None:
        train, test = _first(train, limit), _first(test, limit)
    train, val = hold_out(train, val_fraction, seed)
    logger.info("%s: %d train, %d validation, %d test samples", info.name, len(train), len(val), len(test))
    return DataSplits(info=info, train=train, val=val, test=test)


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _source(name: str) -> DatasetSource:
    """Look ``name`` up exactly, then ignoring case and ``_`` versus ``-`` (Fashion_MNIST works)."""
    if isinstance(name, str):
        if name in _SOURCES:
            return _SOURCES[name]
        for key, source in _SOURCES.items():
            if _canonical(key) == _canonical(name):
                return source
    close = difflib.get_close_matches(str(name).lower(), list(_SOURCES), n=1)
    suggestion = f" Did you mean {close[0]}?" if close else ""
    raise DataError(f"Unknown data set {name!r}; known data sets: {', '.join(list_datasets())}.{suggestion}")


def _check_options(val_fraction: float, limit: int | None) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must lie in [0, 1), got {val_fraction}.")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive whole number of samples, got {limit!r}.")


def _check_split(info: DatasetInfo, split: Split, split_name: str, root: Path) -> None:
    """What every reader must deliver; a file of the wrong shape or labels is caught here."""
    shape = (info.in_channels, info.image_size, info.image_size)
    where = f"{info.name} {split_name} split in {root}"
    if split.images.dtype != torch.uint8 or split.images.dim() != 4 or tuple(split.images.shape[1:]) != shape:
        raise DataError(
            f"The {where} has images of shape {tuple(split.images.shape[1:])} {split.images.dtype}, "
            f"expected {shape} uint8; the files do not hold {info.name}."
        )
    if split.labels.dtype != torch.int64 or split.labels.shape != (split.images.shape[0],):
        raise DataError(f"The {where} has {tuple(split.labels.shape)} labels for {split.images.shape[0]} images.")
    if len(split) == 0:
        raise DataError(f"The {where} is empty.")
    low, high = int(split.labels.min()), int(split.labels.max())
    if low < 0 or high >= info.num_classes:
        raise DataError(f"The {where} has labels {low}..{high}, expected 0..{info.num_classes - 1}.")


def _first(split: Split, limit: int) -> Split:
    # Copies, so the full tensors can be freed.
    return Split(split.images[:limit].clone(), split.labels[:limit].clone())
