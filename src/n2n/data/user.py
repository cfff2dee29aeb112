"""Data as users hold it, turned into the (inputs, labels) tensors a search distils on.

A tensor pair, a map-style Dataset of (input, label) items or a DataLoader of
(inputs, labels) batches. A Dataset is read item by item and a DataLoader batch by
batch, once per compress call: the transforms the user wrote run as they wrote them,
one draw per item (the search's own augmentation is `crop_padding` and `hflip`).
Labels are checked here, before any teacher pass: one class index per input; a
split whose inputs lie far from the training inputs' range is warned about once.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError

log = logging.getLogger(__name__)
# A split's input mean this many training standard deviations from the training mean, or its
# spread this many times wider or narrower, was prepared otherwise (e.g. not normalised, or
# normalised twice): the teacher would score it, and the search its children, on other inputs.
FAR_SHIFT = 3.0
FAR_SCALE = 5.0

DataLike = Dataset | DataLoader | tuple[torch.Tensor, torch.Tensor]
ACCEPTED = ("a torch DataLoader of (inputs, labels) batches, a map-style Dataset of (input, label) items "
            "or an (inputs, labels) pair of tensors (from n2n.load_dataset: n2n.as_tensors(data, split))")


def tensor_pair(data: DataLike, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(float inputs, int64 labels) from any form of DataLike; `what` names the argument in errors."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        inputs, labels = data
    elif isinstance(data, DataLoader):
        inputs, labels = gather_batches(data, what)
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        inputs, labels = stack_items(data, what)
    else:
        raise ConfigError(f"{what} must be {ACCEPTED}; got {type(data).__name__}")
    if len(inputs) != len(labels) or len(labels) == 0:
        raise ConfigError(f"{what}: {len(inputs)} inputs but {len(labels)} labels")
    return inputs.float(), class_indices(labels, what)


def stack_items(data: Dataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
    if not items:
        raise ConfigError(f"{what} is empty")
    if any(not isinstance(item, (tuple, list)) or len(item) != 2 for item in items):
        raise ConfigError(f"{what} items must be (input, label) pairs")
    return stacked([x for x, _ in items], what, "inputs"), stacked([y for _, y in items], what, "labels")


def gather_batches(loader: DataLoader, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, labels = [], []
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ConfigError(f"{what} must give (inputs, labels) batches, got a {type(batch).__name__}")
        inputs.append(torch.as_tensor(batch[0]))
        labels.append(torch.as_tensor(batch[1]))
    if not inputs:
        raise ConfigError(f"{what} is empty")
    return joined(inputs, what, "inputs"), joined(labels, what, "labels")


def stacked(values: list[Any], what: str, part: str) -> torch.Tensor:
    try:
        return torch.stack([torch.as_tensor(value) for value in values])
    except (RuntimeError, TypeError, ValueError) as error:
        raise ConfigError(f"{what}: its {part} do not stack into one tensor ({str(error).splitlines()[0]})") from None


def joined(batches: list[torch.Tensor], what: str, part: str) -> torch.Tensor:
    try:
        return torch.cat(batches)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ConfigError(f"{what}: its {part} batches do not join into one tensor "
                          f"({str(error).splitlines()[0]})") from None


def class_indices(labels: torch.Tensor, what: str) -> torch.Tensor:
    """`labels` as int64 class indices, or a ConfigError naming `what` and what is wrong."""
    if labels.dim() != 1:
        hint = " (squeeze the last axis: labels.squeeze(1))" if labels.dim() == 2 and labels.shape[1] == 1 else (
            " (one-hot? take labels.argmax(1))" if labels.dim() == 2 else "")
        raise ConfigError(f"{what}: labels must be one class index per input, shape ({len(labels)},), "
                          f"got shape {tuple(labels.shape)}{hint}")
    if labels.dtype == torch.bool or labels.is_complex() or (
            labels.is_floating_point() and not bool((labels == labels.round()).all())):
        raise ConfigError(f"{what}: labels must be whole class indices, got {labels.dtype} values "
                          f"such as {labels.flatten()[0].item()!r}")
    labels = labels.long()
    if bool((labels < 0).any()):
        raise ConfigError(f"{what}: labels must be class indices from 0, got {int(labels.min())}")
    return labels


def check_label_range(labels: torch.Tensor, classes: int, what: str) -> None:
    """Every label names one of the teacher's `classes` outputs."""
    if len(labels) and int(labels.max()) >= classes:
        raise ConfigError(f"{what}: label {int(labels.max())} is out of range for a teacher with {classes} "
                          f"outputs (labels are class indices from 0 to {classes - 1})")


def warn_if_prepared_otherwise(train_inputs: torch.Tensor, others: dict[str, torch.Tensor]) -> None:
    """One warning per split whose inputs lie far outside the training inputs' range."""
    mean, std = input_statistics(train_inputs)
    for what, inputs in others.items():
        their_mean, their_std = input_statistics(inputs)
        shifted = abs(their_mean - mean) > FAR_SHIFT * max(std, 1e-8)
        scaled = not (std / FAR_SCALE <= their_std <= std * FAR_SCALE)
        if shifted or scaled:
            log.warning("%s: inputs have mean %.3g and standard deviation %.3g, far from train_data's (%.3g, %.3g): "
                        "were both prepared (scaled, normalised) alike?", what, their_mean, their_std, mean, std)


def input_statistics(inputs: torch.Tensor, sample: int = 1024) -> tuple[float, float]:
    """Mean and standard deviation of the values of the first `sample` inputs."""
    values = inputs[:sample].double()
    spread = float(values.std()) if values.numel() > 1 else 0.0
    return float(values.mean()), spread
