"""The default executor: each child trains in the searching process, one after another."""
from __future__ import annotations

from typing import Callable

from ...distill.data import DistillData
from .jobs import Job, JobResult, run_job


class InlineExecutor:
    name = "inline"
    workers = 1

    def __init__(self, data: DistillData) -> None:
        self.data = data

    def run(self, jobs: list[Job], on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        results = []
        for job in jobs:
            results.append(run_job(job, self.data))  # trains job.child itself: nothing is copied
            if on_result is not None:
                on_result(results[-1])
        return results

    def describe(self) -> str:
        return "inline executor (one child after another, in this process)"

    def close(self) -> None:
        pass
