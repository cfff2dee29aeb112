"""A compressed student on disk and back, whatever model it came from.

One format for every student (see checkpoint.py): how to rebuild it (a spec plus the
rewrites that turned the teacher into the student), its weights, and metadata. A zoo
teacher's spec names its zoo model, so its student loads alone. A user's model has no
spec n2n can build: the spec names its class (for messages only) and the student is
rebuilt on a fresh instance the caller passes, as Torch-Pruning replays a pruning history,
then given its weights; no pickled code, so the file loads with weights_only=True.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .checkpoint import example_input_for, load_checkpoint, read_checkpoint_file, save_checkpoint
from .errors import CheckpointError, ConfigError, N2NError

if TYPE_CHECKING:
    from .compress import CompressionResult

USER_SOURCE = "user"  # arch["source"] of a student whose teacher is the caller's own class
RESULT_FIELDS = ("params", "flops", "val_accuracy", "test_accuracy")


def student_arch(result: CompressionResult, teacher_arch: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec that rebuilds `result`'s student: the kd baseline's own zoo spec, else the
    teacher's spec (a user's class when `teacher_arch` is None) with the search's rewrites added."""
    if result.student_arch:
        return result.student_arch
    if teacher_arch is None:
        teacher_arch = {"name": result.teacher_class or "model", "kwargs": {}, "source": USER_SOURCE}
    return {**teacher_arch, "rewrites": list(teacher_arch.get("rewrites") or []) + list(result.rewrites)}


def save_student(result: CompressionResult, path: str | Path, *, teacher_arch: dict[str, Any] | None = None,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write the student of `result` (from n2n.compress) to `path`; load it with load_student.

    `teacher_arch` is the zoo spec of a zoo teacher (its checkpoint's `arch`), whose student
    then loads without a model; `meta` adds to what the file records (data set, mean, std)."""
    example = result.example_input
    if example is None:
        raise ConfigError("save_student needs the result of n2n.compress (this one records no example input)")
    student = result.student
    with torch.no_grad():
        was_training = student.training
        logits = student.eval()(example.to(next(student.parameters()).device))
        student.train(was_training)
    shape = tuple(int(size) for size in example.shape[1:])
    recorded = {
        "in_channels": shape[0], "image_size": shape[-1], "num_classes": int(logits.shape[-1]),
        "input_shape": list(shape), "input_dtype": str(example.dtype).removeprefix("torch."),
        "model_class": result.teacher_class,
        **{key: result.summary.get("student", {}).get(key) for key in RESULT_FIELDS},
    }
    save_checkpoint(path, student, arch=student_arch(result, teacher_arch), meta=recorded | (meta or {}))
    return Path(path)


def load_student(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The student stored in `path`, in eval mode with the weights it was saved with.

    `model` is a fresh instance of the teacher's class, built with the same arguments: the
    stored rewrites are replayed on it. A student of a zoo teacher needs none."""
    payload = read_checkpoint_file(path)
    arch, meta = payload.get("arch"), payload.get("meta")
    if not isinstance(arch, dict) or not isinstance(meta, dict) or not isinstance(arch.get("rewrites") or [], list):
        raise CheckpointError(f"{path} is damaged: its 'arch' or 'meta' is not what n2n writes")
    if model is None:
        if arch.get("source") == USER_SOURCE:
            raise CheckpointError(f"{path} holds a student of your own model class {arch.get('name')}: "
                                  f"pass a fresh instance, n2n.load_student(path, model={arch.get('name')}(...))")
        return load_checkpoint(path).model
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a fresh instance of the teacher's nn.Module class, got {type(model).__name__}")
    origin = meta.get("model_class") or arch.get("name")
    try:
        student = rebuilt(model, arch.get("rewrites") or [], example_input_of(meta, model))
        student.load_state_dict(payload["state_dict"], strict=True)
    except (N2NError, RuntimeError, KeyError, TypeError) as error:
        why = str(error).splitlines()[0] if isinstance(error, N2NError) else "its weights do not fit"
        raise CheckpointError(f"{path} does not rebuild on a {type(model).__name__} ({why}); the student was "
                              f"compressed from {origin}: pass a fresh instance of that class, built with the "
                              "same arguments") from error
    return student.eval()


def rebuilt(model: nn.Module, rewrites: list[Any], example_input: torch.Tensor) -> nn.Module:
    from .arch import rebuild

    with torch.enable_grad():  # the channel-pruning replay traces with autograd, even under no_grad
        return rebuild(model, example_input, rewrites) if rewrites else model


def example_input_of(meta: dict[str, Any], model: nn.Module) -> torch.Tensor:
    """A one-item zero batch of the recorded input shape and dtype, on the model's device."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    shape, dtype = meta.get("input_shape"), getattr(torch, str(meta.get("input_dtype", "float32")), None)
    if shape is None:
        return example_input_for(meta).to(device)  # a zoo student: square images
    if not isinstance(dtype, torch.dtype) or not isinstance(shape, list) or not all(
            isinstance(size, int) and 0 < size <= 1 << 16 for size in shape):
        raise CheckpointError(f"the checkpoint's input shape {shape!r} or dtype {meta.get('input_dtype')!r} is damaged")
    return torch.zeros(1, *shape, dtype=dtype, device=device)
