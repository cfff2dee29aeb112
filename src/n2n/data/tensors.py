"""A loaded data set as `n2n.compress` and a teacher take it: normalised float tensors, and
the data set's training augmentation as compress's keyword arguments."""

from __future__ import annotations

from typing import Any

import torch

from n2n.data.loader import black_pixel, normalise
from n2n.data.structures import DataSplits
from n2n.errors import ConfigError

SPLITS = ("train", "val", "test")


def as_tensors(data: DataSplits, split: str, device: str | torch.device | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split `split` ("train", "val" or "test") of `data` as (float32 images standardised by the
    data set's mean and std, int64 labels), on `device` (default: where the split is)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    part = getattr(data, split)
    device = part.images.device if device is None else torch.device(device)
    return normalise(part.images.to(device), data.info), part.labels.to(device)


def augmentation_options(data: DataSplits) -> dict[str, Any]:
    """`n2n.compress`'s crop_padding, hflip and crop_fill for the data set's own augmentation:
    crops pad with a black pixel, which after normalisation is -mean/std."""
    info = data.info
    return {"crop_padding": info.crop_padding, "hflip": info.hflip, "crop_fill": black_pixel(info)}
