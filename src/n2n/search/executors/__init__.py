"""Where the children of a policy epoch are trained: in this process, in local worker
processes, or on a Ray cluster. Every executor takes jobs (one per child) and gives
one result per job, in order; a result depends only on its job, seed included.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import torch

from ...distill.data import DistillData
from .inline import InlineExecutor
from .jobs import Job, JobResult

EXECUTORS = ("inline", "process", "ray")
EXECUTOR_CHOICES = ("auto", *EXECUTORS)  # auto: choose_executor picks one for the device


class Executor(Protocol):
    name: str
    workers: int

    def run(self, jobs: list[Job], on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


class ExecutorChoice(NamedTuple):
    name: str
    workers: int
    why: str


def choose_executor(name: str, workers: int, device: torch.device) -> ExecutorChoice:
    """What `--executor auto` means on `device`: worker processes where there is more than
    one device to fill (several GPUs) or where more than one worker was asked for, else the
    inline executor. On one device, torch already spreads one child's training over every
    core and workers only split the cores between them: on 2 CPU cores, 8 demo children
    trained back to back scored at 13.3 and 9.8 candidates per minute inline, and 13.7 and
    11.2 on two worker processes, on two days (benchmarks/search_cost.py, docs/RESULTS.md).
    A gain within the machine's own day-to-day variation, which the search's epochs of 1 to 5
    children, where an odd count leaves a worker waiting, would shrink further."""
    if name != "auto":
        return ExecutorChoice(name, workers, "as asked")
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus > 1:
        return ExecutorChoice("process", max(workers, gpus), f"auto: {gpus} GPUs, a worker process (at least) per GPU")
    if workers > 1:
        return ExecutorChoice("process", workers, f"auto: --workers {workers} asks for children side by side")
    return ExecutorChoice("inline", 1, "auto: one device, which one child's training already fills")


def make_executor(name: str, data: DistillData, *, workers: int = 1, ray_address: str | None = None) -> Executor:
    """The executor `name` over `data`. Local workers start with the first jobs; Ray connects at
    once, so that a wrong address fails before anything trains."""
    if name == "process":
        from .process import ProcessExecutor

        return ProcessExecutor(data, workers)
    if name == "ray":
        from .ray_tasks import RayExecutor

        return RayExecutor(data, workers, ray_address)
    return InlineExecutor(data)


__all__ = ["Executor", "ExecutorChoice", "Job", "JobResult", "choose_executor", "make_executor"]
