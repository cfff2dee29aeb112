"""Where the children of a policy epoch are trained: in this process, in local worker
processes, or on a Ray cluster. Every executor takes jobs (one per child) and gives
one result per job, in order; a result depends only on its job, seed included.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from ...distill.data import DistillData
from ...distill.trainer import distill
from .inline import InlineExecutor
from .jobs import KILL_HOOK, Job, JobResult


class Executor(Protocol):
    name: str
    workers: int

    def run(self, jobs: list[Job], on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def make_executor(name: str, data: DistillData, *, workers: int = 1, ray_address: str | None = None,
                  train: Callable[..., Any] = distill) -> Executor:
    """The executor `name` over `data`. Local workers start with the first jobs; Ray connects at
    once, so that a wrong address fails before anything trains. `train` is what the inline
    executor distils with (workers always use n2n's own distill)."""
    if name == "process":
        from .process import ProcessExecutor

        return ProcessExecutor(data, workers)
    if name == "ray":
        from .ray_tasks import RayExecutor

        return RayExecutor(data, workers, ray_address)
    return InlineExecutor(data, train)


__all__ = ["KILL_HOOK", "Executor", "Job", "JobResult", "make_executor"]
