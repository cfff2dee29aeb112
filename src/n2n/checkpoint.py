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

from .checks import is_whole_number
from .errors import CheckpointError, N2NError
from .files import atomic_save

FORMAT = "n2n-checkpoint/1"
log = logging.getLogger(__name__)

# The schema check refuses before any tensor is allocated: input shapes beyond any image
# this tool trains on, and a zoo model far larger than the weights the file holds. A
# student is rebuilt from its teacher's zoo model and then cut down, so that model may hold
# many times the student's weights; a teacher's own file holds all of them.
MAX_IMAGE_SIZE = 1024
MAX_CHANNELS = 4096
MAX_INPUT_ELEMENTS = 1 << 24  # one example image, channels x height x width
MAX_CLASSES = 1_000_000
MAX_GROWTH = 1000  # zoo model elements per stored element
FLOOR_ELEMENTS = 1 << 27  # about 0.5 GB of float32: every zoo teacher fits under it


@dataclass
class Checkpoint:
    model: nn.Module
    arch: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def example_input(self) -> torch.Tensor:
        return example_input_for(self.meta)


def check_payload(payload: dict[str, Any], path: str | Path) -> None:
    """The checkpoint dict's fields by type and range, before any model is built from it."""
    arch, meta, state = payload.get("arch"), payload.get("meta"), payload.get("state_dict")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError(f"{path} is damaged: its 'arch' is not a model spec with a name")
    if not isinstance(arch.get("kwargs", {}), dict) or not all(isinstance(k, str) for k in arch.get("kwargs", {})):
        raise CheckpointError(f"{path} is damaged: its arch 'kwargs' is not a mapping of argument names")
    if not isinstance(arch.get("rewrites") or [], list):
        raise CheckpointError(f"{path} is damaged: its arch 'rewrites' is not a list")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is damaged: its 'meta' is not a mapping")
    for key, most in (("in_channels", MAX_CHANNELS), ("num_classes", MAX_CLASSES), ("image_size", MAX_IMAGE_SIZE)):
        if not is_whole_number(meta.get(key), 1, most):
            raise CheckpointError(f"{path} is damaged: meta '{key}' must be a whole number between 1 and "
                                  f"{most:,}, got {meta.get(key)!r}")
    if meta["in_channels"] * meta["image_size"] ** 2 > MAX_INPUT_ELEMENTS:
        raise CheckpointError(f"{path} is damaged: its input of {meta['in_channels']} x {meta['image_size']} x "
                              f"{meta['image_size']} is larger than any image this tool reads")
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(f"{path} is damaged: its 'state_dict' is not a mapping of names to tensors")
    broken = [name for name, tensor in state.items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise CheckpointError(f"{path} holds weights that are not finite (NaN or infinite) in {broken[0]}"
                              f"{f' and {len(broken) - 1} more' if len(broken) > 1 else ''}: the model "
                              "diverged when it was trained; train it again")


def check_model_size(arch: dict[str, Any], stored: int, path: str | Path) -> None:
    """Refuse a spec whose zoo model dwarfs the stored weights (a width of millions), counted
    on the meta device, which allocates nothing."""
    from .models import create_model

    try:
        with torch.device("meta"):
            model = create_model(arch["name"], **arch.get("kwargs", {}))
    except N2NError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError) as error:
        raise CheckpointError(f"{path}: its arch cannot be built ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None
    elements = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    if elements > max(MAX_GROWTH * stored, FLOOR_ELEMENTS):
        raise CheckpointError(f"{path} is damaged: its arch describes a model of {elements:,} weights "
                              f"but the file holds {stored:,}")


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
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file")
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
    check_payload(payload, path)
    arch, meta = payload["arch"], payload["meta"]
    check_model_size(arch, sum(t.numel() for t in payload["state_dict"].values()), path)
    try:
        model = build_from_arch(arch, example_input_for(meta))
    except N2NError:
        raise
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError) as error:
        # rewrites are replayed from the file's lists and dicts: a damaged one fails in any of these
        raise CheckpointError(f"{path}: its stored rewrites do not apply to its model "
                              f"({type(error).__name__})") from None
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
