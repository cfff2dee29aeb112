"""A model on disk: how to rebuild it (zoo spec plus rewrites), its weights, and what it was trained on.

The file is a plain dict of strings, numbers, lists and tensors, so it loads with
`torch.load(weights_only=True)`: no pickled code. Every student has its own shapes,
so the architecture is stored as the zoo model it came from plus the rewrites
(layer removal, channel shrinkage) that turned it into the student.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .files import atomic_save

FORMAT = "n2n-checkpoint/1"
log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    model: nn.Module
    arch: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def example_input(self) -> torch.Tensor:
        return example_input_for(self.meta)


def example_input_for(meta: dict[str, Any]) -> torch.Tensor:
    """A one-image zero batch of the shape the model was trained on."""
    return torch.zeros(1, int(meta["in_channels"]), int(meta["image_size"]), int(meta["image_size"]))


def save_checkpoint(path: str | Path, model: nn.Module, *, arch: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write `model` with the spec that rebuilds it; `meta` must hold in_channels, num_classes, image_size."""
    missing = {"in_channels", "num_classes", "image_size"} - meta.keys()
    if missing:
        raise ValueError(f"checkpoint meta lacks {sorted(missing)}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"format": FORMAT, "arch": arch, "meta": meta, "state_dict": state}, path)


def read_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Load the raw dict, turning every way a file can be wrong into one CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path} is not a readable n2n checkpoint ({type(error).__name__})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an n2n checkpoint (no '{FORMAT}' marker)")
    return payload


def build_from_arch(arch: dict[str, Any], example_input: torch.Tensor) -> nn.Module:
    """Rebuild the untrained module that `arch` describes: the zoo model, then its rewrites."""
    from .models import create_model

    model = create_model(arch["name"], **arch.get("kwargs", {}))
    rewrites = arch.get("rewrites") or []
    if rewrites:
        from .arch import rebuild

        with torch.enable_grad():  # the channel-pruning replay traces with autograd, even under no_grad
            model = rebuild(model, example_input, rewrites)
    return model


def load_checkpoint(path: str | Path) -> Checkpoint:
    payload = read_checkpoint_file(path)
    arch, meta = payload["arch"], payload["meta"]
    model = build_from_arch(arch, example_input_for(meta))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the stored architecture") from error
    model.eval()
    return Checkpoint(model=model, arch=arch, meta=meta)


def check_fits(meta: dict[str, Any], info: Any, path: str | Path = "checkpoint") -> None:
    """Refuse a model whose input channels or classes differ from the data set's."""
    if int(meta["in_channels"]) != info.in_channels:
        raise CheckpointError(
            f"{path} expects {meta['in_channels']}-channel input but {info.name} has {info.in_channels} channels"
        )
    if int(meta["num_classes"]) != info.num_classes:
        raise CheckpointError(
            f"{path} predicts {meta['num_classes']} classes but {info.name} has {info.num_classes}"
        )
