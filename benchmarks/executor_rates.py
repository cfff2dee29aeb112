"""(b) Where children train: candidates per minute on the inline, process and Ray executors.

A fixed set of children, each distilled as the search's proxy distils it, timed once the
workers are up (starting them and sending their data is timed apart). Run by
search_cost.py on the children it samples; its functions take any children that carry a
proxy-ready module, name and seed.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
from dataclasses import replace
from typing import Any

from measure import number, say, timed
from n2n.search.executors import Job, make_executor


def executor_plans(args: argparse.Namespace) -> tuple[list[tuple[str, int]], list[str]]:
    """(executor, workers) pairs to time, and notes on those left out."""
    plans, notes = [], []
    for name in args.executors:
        if name == "ray" and importlib.util.find_spec("ray") is None:
            notes.append("ray: not installed (pip install 'n2n[ray]'), left out")
            continue
        # inline trains one child after another whatever the worker count
        plans += [(name, 1)] if name == "inline" else [(name, count) for count in args.workers]
    return plans, notes


def executor_rate(name: str, workers: int, children: list[Any], proxy: Any) -> dict[str, Any]:
    """Candidates per minute once the workers are up; starting them (and their data) is timed apart."""
    executor = make_executor(name, proxy.data, workers=workers)
    device = proxy.data.train_images.device
    try:
        warm_up = [Job(f"warm-up-{n}", copy.deepcopy(children[0].proxy_child),
                       replace(proxy.config, subset=proxy.config.batch_size), children[0].seed)
                   for n in range(workers)]
        _, start_seconds = timed(lambda: executor.run(warm_up), device)
        jobs = [Job(child.name, copy.deepcopy(child.proxy_child), proxy.config, child.seed) for child in children]
        results, seconds = timed(lambda: executor.run(jobs), device)
    finally:
        executor.close()
    return {"executor": name, "workers": workers, "children": len(jobs), "failed": sum(not r.ok for r in results),
            "start_seconds": start_seconds, "seconds": seconds, "candidates_per_minute": 60 * len(jobs) / seconds,
            "described": executor.describe()}


def measure_executors(args: argparse.Namespace, children: list[Any], proxy: Any) -> dict[str, Any]:
    plans, notes = executor_plans(args)
    for note in notes:
        say(note)
    chosen = children[: args.executor_children]
    rows = []
    for name, workers in plans:
        rows.append(executor_rate(name, workers, chosen, proxy))
        say(f"{name} executor, {workers} worker(s): {rows[-1]['candidates_per_minute']:.2f} candidates/minute")
    return {"rows": rows, "notes": notes}


def executor_table(executors: dict[str, Any] | None) -> list[str]:
    if executors is None:
        return []
    lines = ["## Executors", "", "| executor | workers | children | start-up s | seconds | candidates/minute |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in executors["rows"]:
        lines.append(f"| {row['executor']} | {row['workers']} | {row['children']} | {number(row['start_seconds'])} | "
                     f"{number(row['seconds'])} | {number(row['candidates_per_minute'])} |")
    return lines + [f"- {note}" for note in executors["notes"]]
