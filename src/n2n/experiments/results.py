"""An experiment's results: one row per run, a table per variant (mean and spread over
seeds), and the reward, accuracy and compression of each policy epoch as curves."""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..report.summary import is_valid, load_run
from .plots import plot_curves, plot_students
from .spec import Experiment


@dataclass
class RunRow:
    variant: str
    seed: int
    params: int
    flops: int | None  # the student's multiply-accumulates per image
    compression: float
    test_accuracy: float | None
    teacher_test_accuracy: float | None
    teacher_params: int
    seconds: float
    children: int  # children trained (cache hits and rejections excluded)
    curves: dict[str, list[dict[str, float]]]  # stage -> per policy epoch: reward, accuracy, compression


def run_row(run_dir: Path, variant: str, seed: int) -> RunRow:
    run = load_run(run_dir)
    summary = run.summary or {}
    return RunRow(
        variant=variant, seed=seed, params=summary["student"]["params"], flops=summary["student"].get("flops"),
        compression=summary["compression"],
        test_accuracy=summary["student"].get("test_accuracy"),
        teacher_test_accuracy=summary["teacher"].get("test_accuracy"),
        teacher_params=summary["teacher"]["params"],
        seconds=float(summary.get("search_seconds", 0.0)),
        children=sum(stage["candidates"] for stage in summary["stages"]),
        curves={stage: epoch_curve(run, stage) for stage in run.stages},
    )


def epoch_curve(run: Any, stage: str) -> list[dict[str, float]]:
    """Per policy epoch: mean reward, and mean accuracy and compression of the valid children."""
    teacher_params = run.teacher["params"]
    points = []
    for epoch in run.stage_epochs(stage):
        valid = [c for c in run.stage_candidates(stage) if c["epoch"] == epoch["epoch"] and is_valid(c)]
        points.append({
            "epoch": epoch["epoch"], "reward": epoch["reward_mean"],
            "accuracy": mean([c["val_accuracy"] for c in valid]),
            "compression": mean([teacher_params / c["params"] for c in valid]),
        })
    return points


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def spread(values: list[float], digits: str = ".2f") -> str:
    """'mean ± standard deviation' (just the value for one)."""
    if len(values) == 1:
        return f"{values[0]:{digits}}"
    return f"{statistics.fmean(values):{digits}} ± {statistics.stdev(values):{digits}}"


def percent(values: list[float | None]) -> str:
    known = [100 * v for v in values if v is not None]
    return spread(known) if known else "-"


def table_lines(experiment: Experiment, rows: list[RunRow]) -> list[str]:
    shown = experiment.table or list(experiment.variants)
    lines = ["| variant | seeds | params | MACs (M) | compression | test accuracy (%) | drop (points) "
             "| children trained | time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for variant in shown:
        group = [r for r in rows if r.variant == variant]
        if not group:
            continue
        drops = [100 * (r.teacher_test_accuracy - r.test_accuracy) for r in group
                 if r.test_accuracy is not None and r.teacher_test_accuracy is not None]
        macs = [r.flops / 1e6 for r in group if r.flops is not None]
        lines.append(f"| {variant} | {len(group)} | {spread([r.params for r in group], ',.0f')} "
                     f"| {spread(macs) if macs else '-'} | {spread([r.compression for r in group], '.1f')}x "
                     f"| {percent([r.test_accuracy for r in group])} | {spread(drops) if drops else '-'} "
                     f"| {spread([r.children for r in group], '.0f')} | {spread([r.seconds for r in group], '.0f')} |")
    return lines


def write_results(folder: Path, experiment: Experiment, rows: list[RunRow]) -> None:
    """table.md (with the runs listed), results.json (every row and curve), curves.png and students.png."""
    header = [f"# {experiment.title}", ""]
    if experiment.figure:
        header += [f"Reproduces {experiment.figure}.", ""]
    teachers = teacher_accuracies(experiment, rows)
    if teachers:
        header += [f"Teacher test accuracy: {' / '.join(f'{100 * t:.2f}%' for t in teachers)}. Each row: mean ± "
                   f"standard deviation over its seeds; scale `{experiment.scale}`.", ""]
    runs = ["", "Runs (each a run folder with its own report.md):", ""]
    runs += [f"- `runs/{r.variant}-seed{r.seed}`: {r.params:,} params, test accuracy "
             f"{'-' if r.test_accuracy is None else f'{100 * r.test_accuracy:.2f}%'}"
             f"{'' if r.teacher_test_accuracy is None else f' (teacher {100 * r.teacher_test_accuracy:.2f}%)'}"
             for r in rows]
    atomic_write_text(folder / "table.md", "\n".join(header + table_lines(experiment, rows) + runs) + "\n")
    atomic_write_text(folder / "results.json", json.dumps(
        {"experiment": experiment.name, "scale": experiment.scale, "rows": [asdict(r) for r in rows]}, indent=1))
    plot_curves(folder / "curves.png", experiment.title, rows)
    plot_students(folder / "students.png", experiment.title, rows)


def teacher_accuracies(experiment: Experiment, rows: list[RunRow]) -> list[float]:
    """The distinct teacher test accuracies of the rows the table shows (runs such as a
    transfer experiment's pretraining may have searched another teacher)."""
    shown = set(experiment.table or experiment.variants)
    return sorted({r.teacher_test_accuracy for r in rows if r.variant in shown and r.teacher_test_accuracy is not None})
