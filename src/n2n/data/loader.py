"""Batches from a Split held as one uint8 tensor on the device, augmented a whole batch at a time.

No per-sample Python runs while iterating: shuffling is one permutation,
cropping one gather from a padded batch, flipping one ``torch.where``. All
randomness comes from a generator seeded by (seed, epoch), so the same seed
gives the same batches on every run and any device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from n2n.data.structures import DatasetInfo, Split
from n2n.errors import ConfigError, DataError


def normalise(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 on the same device, scaled to [0, 1] then standardised."""
    _check_images(images, info)
    return standardise(images.float().div_(255), info)


def standardise(batch: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """(x - mean) / std per channel, for a float batch already on the [0, 1] scale."""
    mean, std = channel_stats(info, batch.device, batch.dtype)
    return (batch - mean) / std


def channel_stats(info: DatasetInfo, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The data set's mean and std as 1 x C x 1 x 1 tensors, ready to broadcast over a batch."""
    mean = torch.tensor(info.mean, dtype=dtype, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=dtype, device=device).view(1, -1, 1, 1)
    return mean, std


def random_crop(batch: torch.Tensor, padding: int, generator: torch.Generator,
                fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Pad every image by ``padding`` with ``fill`` (a number, or one per channel as 1 x C x 1 x 1) and
    cut a same-size window at a random offset per image."""
    if padding <= 0:
        return batch
    n, channels, height, width = batch.shape
    padded = F.pad(batch - fill, (padding, padding, padding, padding)) + fill  # F.pad fills with one number only
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(batch.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(batch.device)
    rows = (top[:, None] + torch.arange(height, device=batch.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width, device=batch.device))[:, None, None, :]
    samples = torch.arange(n, device=batch.device)[:, None, None, None]
    chans = torch.arange(channels, device=batch.device)[None, :, None, None]
    return padded[samples, chans, rows, cols]


def random_hflip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(batch.shape[0], generator=generator) < 0.5).to(batch.device)
    return torch.where(flip[:, None, None, None], batch.flip(3), batch)


def black_pixel(info: DatasetInfo) -> tuple[float, ...]:
    """A black pixel after normalisation, per channel: what padding adds to a normalised image."""
    return tuple(-mean / std for mean, std in zip(info.mean, info.std))


def augment_batch(batch: torch.Tensor, info: DatasetInfo, generator: torch.Generator) -> torch.Tensor:
    """The data set's training augmentation (random crop, then flip) on a [0, 1] float batch."""
    batch = random_crop(batch, info.crop_padding, generator)
    return random_hflip(batch, generator) if info.hflip else batch


class TensorLoader:
    """Iterates over a Split in batches of normalised float images and int64 labels.

    The images are moved to ``device`` once, as uint8. Every pass (epoch) draws
    a fresh permutation and fresh augmentations from a generator seeded with
    (seed, epoch); ``set_epoch`` chooses the epoch explicitly (e.g. on resume).
    With ``with_indices`` each batch also carries the samples' positions in the
    split (for per-sample caches such as stored teacher outputs).
    """

    def __init__(
        self,
        split: Split,
        info: DatasetInfo,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        augment: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        with_indices: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive whole number, got {batch_size!r}.")
        _check_images(split.images, info)
        self.info = info
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.device = torch.device(device)
        self.seed = seed
        self.drop_last = drop_last
        self.with_indices = with_indices
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self._mean, self._std = channel_stats(info, self.device, torch.float32)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        self.epoch += 1
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=generator).to(self.device)
        else:
            order = torch.arange(self.num_samples, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start : start + self.batch_size]
            batch = self.images[indices].float().div_(255)
            if self.augment:
                batch = augment_batch(batch, self.info, generator)
            outputs = ((batch - self._mean) / self._std, self.labels[indices])
            yield (*outputs, indices) if self.with_indices else outputs


def _epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed per (seed, epoch): neighbouring epochs get unrelated streams."""
    state = np.random.SeedSequence([seed % 2**64, epoch % 2**64]).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1


def _check_images(images: torch.Tensor, info: DatasetInfo) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != info.in_channels:
        raise DataError(
            f"Expected uint8 images of shape N x {info.in_channels} x H x W for {info.name}, "
            f"got {tuple(images.shape)} {images.dtype}."
        )
