"""What a search's policies learned, read from finished (or interrupted) run folders.

For each run and stage, one row per policy epoch: the children the policy proposed, the
mean of their actions (layers removed per child in the removal stage; the mean width
index chosen in the shrinking stage), the mean and best proxy accuracy of the valid ones,
and the best proxy accuracy found so far. For the removal stage, also the proxy accuracy
by the number of layers removed: whether the proxy itself prefers fewer removals, which a
policy trained on it then learns. Nothing is trained; the run folders are only read.

    .venv/bin/python benchmarks/policy_learning.py results/deep-vgg16/runs/n2n-10x-seed0 \\
        results/deep-vgg16/runs/n2n-10x-seed1
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

from n2n.errors import N2NError
from n2n.report.summary import is_valid, load_run


def percent(values: list[float]) -> str:
    return f"{100 * statistics.fmean(values):.2f}" if values else "-"


def epoch_table(candidates: list[dict], action_label: str, measure: Callable[[list[int]], float]) -> list[str]:
    lines = [f"| policy epoch | children | {action_label} | mean proxy accuracy (%) | best of epoch (%) "
             "| best so far (%) |", "|---:|---:|---:|---:|---:|---:|"]
    best_so_far: float | None = None
    for epoch in sorted({c["epoch"] for c in candidates}):
        children = [c for c in candidates if c["epoch"] == epoch]
        accuracies = [c["val_accuracy"] for c in children if is_valid(c)]
        if accuracies:
            best_so_far = max(accuracies + ([best_so_far] if best_so_far is not None else []))
        actions = statistics.fmean(measure(c["actions"]) for c in children)
        lines.append(f"| {epoch} | {len(children)} | {actions:.2f} | {percent(accuracies)} "
                     f"| {percent([max(accuracies)] if accuracies else [])} "
                     f"| {percent([best_so_far] if best_so_far is not None else [])} |")
    return lines


def removal_by_count(candidates: list[dict]) -> list[str]:
    lines = ["| layers removed | children | mean proxy accuracy (%) | best (%) |", "|---:|---:|---:|---:|"]
    by_count: dict[int, list[float]] = {}
    for child in candidates:
        if is_valid(child):
            by_count.setdefault(sum(child["actions"]), []).append(child["val_accuracy"])
    for count in sorted(by_count):
        accuracies = by_count[count]
        lines.append(f"| {count} | {len(accuracies)} | {percent(accuracies)} | {percent([max(accuracies)])} |")
    return lines


def describe(run_dir: Path) -> list[str]:
    run = load_run(run_dir)
    lines = [f"## {run_dir}", ""]
    for stage in run.stages:
        candidates = run.stage_candidates(stage)
        if not any(child["actions"] for child in candidates):
            lines += [f"### {stage}", "", "No policy: the students of a baseline.", ""]
            continue
        removal = stage == "removal"
        label, measure = ("layers removed per child", sum) if removal else ("mean width index", statistics.fmean)
        lines += [f"### {stage}", ""] + epoch_table(candidates, label, measure) + [""]
        if removal:
            lines += removal_by_count(candidates) + [""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (n2n compress --out, or an experiment's runs)")
    args = parser.parse_args(argv)
    for run_dir in args.runs:
        try:
            print("\n".join(describe(run_dir)))
        except (N2NError, OSError) as error:
            print(f"error: {run_dir}: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
