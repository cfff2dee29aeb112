"""Side-by-side comparison of checkpoints: size, cost, test accuracy and CPU latency.

Each data set is read once, however many checkpoints are evaluated on it.
Latency is a quick indication for the command line (median of a few timed
runs after a warm-up, on CPU), not a benchmark. It runs on one thread by
default: multi-threaded timings of small models swing by 100x on a busy
machine, one-thread timings stay put and compare fairly across machines.
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch import count_flops
from .checkpoint import Checkpoint, check_fits, example_input_for, load_checkpoint
from .checks import check_whole
from .data import DataSplits, as_tensors, load_dataset
from .errors import ConfigError
from .runtime import resolve_device
from .models import count_parameters
from .training import accuracy

log = logging.getLogger(__name__)

LATENCY_BATCHES = (1, 64)
WARMUP_RUNS = 2
MAX_LATENCY_REPEATS = 10_000  # refuses a typo of many zeros; the time budget below ends a run sooner
LATENCY_BUDGET_S = 2.0  # per batch size: stop repeating once this much time is spent (at least 3 runs)


def evaluate_loaded(path: str | Path, ckpt: Checkpoint, data: DataSplits, device: torch.device) -> dict[str, Any]:
    """Test accuracy and parameter count of a loaded checkpoint on `data` (refused if it does not fit)."""
    check_fits(ckpt.meta, data.info, path)
    model = ckpt.model.to(device)
    return {
        "checkpoint": str(path), "dataset": data.info.name, "params": count_parameters(model),
        "test_accuracy": accuracy(model, *as_tensors(data, "test", device)),
    }


def compare_checkpoints(
    paths: Sequence[str | Path],
    dataset: str | None = None,
    *,
    data_dir: str | Path | None = None,
    device: str | None = None,
    limit: int | None = None,
    latency_repeats: int = 10,
    latency_threads: int | None = 1,
) -> list[dict[str, Any]]:
    """One row per checkpoint: params, FLOPs, bytes on disk, test accuracy, CPU ms per image at batch 1 and 64.

    `dataset` defaults to each checkpoint's own; accuracy runs on `device`,
    latency always on CPU with `latency_threads` threads (None: torch's current
    setting). `latency_repeats=0` skips latency (its values are None).
    """
    check_whole("latency_repeats", latency_repeats, 0, MAX_LATENCY_REPEATS)
    if latency_threads is not None:
        check_whole("latency_threads", latency_threads, 1)
    dev = resolve_device(device)
    datasets: dict[str, DataSplits] = {}
    rows = []
    for path in paths:
        ckpt = load_checkpoint(path)
        name = dataset or ckpt.meta.get("dataset")
        if not name:
            raise ConfigError(f"{path} does not record its data set: name one with --dataset")
        if name not in datasets:
            datasets[name] = load_dataset(name, data_dir, limit=limit)
        row = evaluate_loaded(path, ckpt, datasets[name], dev)
        model = ckpt.model.cpu().eval()
        example = example_input_for(ckpt.meta)
        row["flops"] = count_flops(model, example)
        row["size_bytes"] = os.path.getsize(path)
        for batch in LATENCY_BATCHES:
            timed = latency_repeats > 0
            row[f"latency_ms_b{batch}"] = (
                cpu_latency_ms(model, example, batch, latency_repeats, latency_threads) if timed else None
            )
        rows.append(row)
    return rows


def cpu_latency_ms(
    model: nn.Module, example_input: torch.Tensor, batch: int, repeats: int, threads: int | None = 1
) -> float:
    """Median wall time per image, in ms, of a forward pass of `batch` images on CPU with `threads` threads."""
    images = example_input.cpu().expand(batch, *example_input.shape[1:]).contiguous()
    previous = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            seconds = _median_seconds(lambda: model(images), repeats)
    finally:
        torch.set_num_threads(previous)
    return 1000.0 * seconds / batch


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    for _ in range(WARMUP_RUNS):
        run()
    times: list[float] = []
    deadline = time.perf_counter() + LATENCY_BUDGET_S
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


COLUMNS = ("checkpoint", "dataset", "params", "vs first", "FLOPs", "size", "test acc", "ms/img b1", "ms/img b64")


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of `compare_checkpoints` rows; "vs first" is the first row's params over each row's."""
    if not rows:
        return ""
    reference = rows[0]["params"]
    cells = [COLUMNS] + [_cells(row, reference) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(_align(cell, width, i) for i, (cell, width) in enumerate(zip(line, widths))) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def _align(cell: str, width: int, column: int) -> str:
    return cell.ljust(width) if column < 2 else cell.rjust(width)  # names flush left, numbers flush right


def _cells(row: dict[str, Any], reference_params: int) -> tuple[str, ...]:
    ratio = f"{reference_params / row['params']:.1f}x" if row["params"] else "-"
    return (
        row["checkpoint"], row["dataset"], f"{row['params']:,}", ratio, f"{row['flops']:,}", _bytes(row["size_bytes"]),
        f"{row['test_accuracy']:.2%}", _ms(row.get("latency_ms_b1")), _ms(row.get("latency_ms_b64")),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
