"""The records every part of the data package passes around: what a data set is, and its splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from n2n.errors import ConfigError

if TYPE_CHECKING:
    from n2n.data.download import DownloadSpec


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set: shapes, classes, normalisation and augmentation."""

    name: str
    in_channels: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...]  # per channel, on the [0, 1] pixel scale
    std: tuple[float, ...]
    crop_padding: int  # random-crop padding for augmentation (0 = none)
    hflip: bool  # random horizontal flip for augmentation
    files_hint: str  # one sentence: which files go where (used in error messages)

    def __post_init__(self) -> None:
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ConfigError(f"Data set {self.name}: mean and std need one value per input channel.")
        if any(value <= 0 for value in self.std):
            raise ConfigError(f"Data set {self.name}: every std must be positive.")


@dataclass
class Split:
    """One split held in memory: uint8 images N x C x H x W and int64 labels N."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])


@dataclass
class DataSplits:
    """A loaded data set: train (without the held-out part), validation and test."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split


Reader = Callable[[Path], "tuple[Split, Split]"]
"""Reads the (train, test) splits from a folder holding the data set's standard files."""

FileCheck = Callable[[Path], "dict[str, bool]"]
"""Maps each standard file (as a user should read its name) to whether a folder holds it."""


@dataclass(frozen=True)
class DatasetSource:
    """Everything the registry knows about one data set: facts, how to read it, find it, fetch it."""

    info: DatasetInfo
    reader: Reader
    check_files: FileCheck | None = None  # None: any existing folder is taken as complete
    download: DownloadSpec | None = None

    def missing_in(self, root: Path) -> list[str]:
        """The standard files ``root`` lacks; empty when it holds the whole data set."""
        if not root.is_dir():
            return ["the folder itself"]
        if self.check_files is None:
            return []
        return [name for name, present in self.check_files(root).items() if not present]

    def is_partial(self, root: Path) -> bool:
        """True when ``root`` holds some but not all of the standard files."""
        if self.check_files is None or not root.is_dir():
            return False
        present = list(self.check_files(root).values())
        return any(present) and not all(present)
