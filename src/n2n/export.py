"""Export a model to ONNX, TorchScript or torch.export's ExportedProgram, and check the file against PyTorch.

Each export is written to a temporary file next to its destination, loaded back
from that file and run on a seeded random batch; only then is it renamed into
place, so the file a user finds is the one that was checked.
"""
from __future__ import annotations

import importlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .checks import check_output_path, check_seed, check_whole
from .errors import ConfigError, ModelError, N2NError
from .files import naming, temporary_sibling

log = logging.getLogger(__name__)

# Format name -> suffix of the default output file (next to the checkpoint, same stem).
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported": ".pt2"}
FORMATS = tuple(SUFFIXES)
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# The check runs the model on this many random images at most: enough to see a difference,
# and far from the memory a typo of many zeros would ask for.
MAX_BATCH = 1024
# torch.jit is deprecated in recent torch; its warnings say nothing a user of this export can act on.
_JIT_DEPRECATION = r"`torch\.jit\."
_NOISY_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


@dataclass(frozen=True)
class ExportReport:
    out_path: Path
    fmt: str
    max_abs_diff: float  # largest |exported - PyTorch| over the logits of the sample batch
    batch: int


def export_checkpoint(
    path: str | Path, fmt: str, out: str | Path | None = None, *, batch: int = 8, seed: int = 0, force: bool = False
) -> ExportReport:
    """Write the model of checkpoint `path` as `fmt` (one of FORMATS) and check it on a sample batch.

    `out` defaults to the checkpoint's path with the format's suffix; an existing
    file is replaced only with `force`. The ONNX graph and the ExportedProgram have a dynamic batch axis.
    """
    fmt = check_format(fmt)
    check_whole("the sample batch size (--batch)", batch, 1, MAX_BATCH)
    check_seed("--seed", seed)
    writer = writer_for(fmt)  # missing packages fail before any work
    target = check_output_path(out if out is not None else default_export_path(path, fmt), "--out")
    _refuse_overwrite(target, Path(path), force)
    ckpt = load_checkpoint(path)
    sample = sample_batch(ckpt.meta, batch, seed)
    return write_checked(ckpt.model, sample, target, fmt, writer)


def export_model(model: nn.Module, out: str | Path, fmt: str = "exported", *, example_input: torch.Tensor,
                 batch: int = 8, seed: int = 0, force: bool = False) -> ExportReport:
    """Write `model` (e.g. from n2n.load_student) as `fmt` and check it on a seeded random batch
    of `example_input`'s shape; an existing `out` is replaced only with `force`."""
    fmt = check_format(fmt)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 1024:
        raise ConfigError(f"the sample batch size must be a whole number from 1 to 1024, got {batch!r}")
    if not torch.is_tensor(example_input) or example_input.dim() < 2:
        raise ConfigError("example_input must be a batch of inputs the model takes (a tensor of 2 or more dimensions)")
    writer = writer_for(fmt)
    target = Path(out)
    if target.exists() and not force:
        raise N2NError(f"{target} already exists: choose another path or pass force=True to replace it")
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn((batch, *example_input.shape[1:]), generator=generator).to(example_input.dtype)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return write_checked(model.cpu().eval(), sample, target, fmt, writer, restore=device)


def write_checked(model: nn.Module, sample: torch.Tensor, target: Path, fmt: str,
                  writer: Callable[[nn.Module, torch.Tensor, Path], torch.Tensor],
                  restore: torch.device | None = None) -> ExportReport:
    """Write through a temporary file, read back and compared with PyTorch before it is renamed into place."""
    try:
        with torch.inference_mode():
            expected = model(sample)
        with naming(target), temporary_sibling(target) as tmp:
            exported = writer(model, sample, tmp)
            os.replace(tmp, target)
    finally:
        if restore is not None:
            model.to(restore)
    diff = (exported - expected).abs().max().item()
    log.info("exported to %s (%s); largest difference from PyTorch on %d inputs: %.3g",
             target, fmt, len(sample), diff)
    return ExportReport(out_path=target, fmt=fmt, max_abs_diff=diff, batch=len(sample))


def writer_for(fmt: str) -> Callable[[nn.Module, torch.Tensor, Path], torch.Tensor]:
    """The function that writes `fmt` and returns the written file's logits on the sample."""
    return {"onnx": _onnx_writer, "torchscript": lambda: _write_torchscript,
            "exported": lambda: _write_exported}[fmt]()


def check_format(fmt: str) -> str:
    name = fmt.strip().lower() if isinstance(fmt, str) else fmt
    if name not in SUFFIXES:
        raise ConfigError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    return name


def default_export_path(path: str | Path, fmt: str) -> Path:
    """Next to the checkpoint, same stem: run/student.pt -> run/student.onnx or run/student.torchscript.pt."""
    path = Path(path)
    return path.with_name(path.stem + SUFFIXES[check_format(fmt)])


def sample_batch(meta: dict[str, Any], batch: int, seed: int) -> torch.Tensor:
    """Seeded standard-normal images of the checkpoint's input shape (what normalised data looks like)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, int(meta["in_channels"]), int(meta["image_size"]), int(meta["image_size"]))
    return torch.randn(shape, generator=generator)


def _refuse_overwrite(target: Path, checkpoint: Path, force: bool) -> None:
    if target.resolve() == checkpoint.resolve():
        raise ConfigError(f"the export destination {target} is the checkpoint itself: choose another --out")
    if target.exists() and not force:
        raise N2NError(f"{target} already exists: choose another --out or pass --force to replace it")


def _write_torchscript(model: nn.Module, sample: torch.Tensor, file: Path) -> torch.Tensor:
    """Trace, save, load back; the loaded module's logits on `sample`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATION, category=DeprecationWarning)
        try:
            traced = torch.jit.trace(model, sample)
        except Exception as error:  # tracing fails in many ways on unusual models
            raise ModelError(f"the model cannot be traced to TorchScript ({_first_line(error)})") from error
        with open(file, "wb") as stream:  # saved to a path, a full disk aborts the whole process
            torch.jit.save(traced, stream)
        loaded = torch.jit.load(str(file), map_location="cpu")
        with torch.inference_mode():
            return loaded(sample)


def _write_exported(model: nn.Module, sample: torch.Tensor, file: Path) -> torch.Tensor:
    """torch.export with a dynamic batch axis, saved, loaded back; the loaded program's logits on `sample`."""
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            program = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
        except Exception as error:  # torch.export raises many types on unusual models
            raise ModelError(f"the model cannot be exported with torch.export ({_first_line(error)})") from error
        # saved into memory first: torch's archive writer aborts the process on a full disk
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        file.write_bytes(buffer.getvalue())
        loaded = torch.export.load(io.BytesIO(file.read_bytes()))  # the file read back, whatever its suffix
    with torch.inference_mode():
        return loaded.module()(sample)


def _require(package: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise N2NError(f"ONNX export needs the {package} package: pip install 'n2n[onnx]'") from error


def _onnx_writer() -> Callable[[nn.Module, torch.Tensor, Path], torch.Tensor]:
    # onnxscript is what torch's (dynamo) ONNX exporter translates with; the older
    # TorchScript-based exporter cannot express adaptive pooling to sizes that do not
    # divide the input, which rewritten students often have.
    onnx, runtime = _require("onnx"), _require("onnxruntime")
    _require("onnxscript")

    def write(model: nn.Module, sample: torch.Tensor, file: Path) -> torch.Tensor:
        _export_onnx(model, sample, file)
        try:
            onnx.checker.check_model(str(file))
        except onnx.checker.ValidationError as error:
            raise ModelError(f"the exported ONNX graph is invalid ({_first_line(error)})") from error
        options = runtime.SessionOptions()
        options.log_severity_level = 3  # errors only
        session = runtime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: sample.numpy()})
        return torch.from_numpy(logits)

    return write


def _export_onnx(model: nn.Module, sample: torch.Tensor, file: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    with _quiet_onnx_exporter():
        try:
            program = torch.onnx.export(
                model, (sample,), None, dynamo=True, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
            )
            data = program.model_proto.SerializeToString()
        except Exception as error:  # torch.export and the translator raise many types
            raise ModelError(f"the model cannot be exported to ONNX ({_first_line(error)})") from error
    file.write_bytes(data)  # written here, so that a full disk is an OSError naming the file


@contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """Silence the exporter's notes (absent torchvision ops, optimiser passes, internal deprecations)."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
