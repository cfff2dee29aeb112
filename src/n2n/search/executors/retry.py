"""The bookkeeping the worker pools share: which job goes next, and what a finished attempt means.

A job whose worker died (or ran out of memory) is tried once more; when that fails too,
its child is scored invalid with the reason and the search goes on. Training is
deterministic, so a second attempt gives what the first would have.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable

from .jobs import Job, JobResult, from_bytes, to_bytes

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2


class WorkerError(RuntimeError):
    """Training a child raised an error in a worker (not a death): raised in the searching process."""


class Attempts:
    def __init__(self, jobs: list[Job], on_result: Callable[[JobResult], None] | None) -> None:
        self.jobs, self.on_result = jobs, on_result
        self.packed = [to_bytes(job) for job in jobs]  # what every attempt sends to a worker
        self.results: list[JobResult | None] = [None] * len(jobs)
        self.waiting = deque((index, 1) for index in range(len(jobs)))  # (job index, attempt number)

    def next(self) -> tuple[int, int]:
        return self.waiting.popleft()

    def finished(self, index: int, attempt: int, kind: str, payload: Any) -> None:
        """Record what a worker answered: ("result", result bytes), ("failed", "what: detail") or
        ("raised", a traceback)."""
        if kind == "raised":
            raise WorkerError(f"training {self.jobs[index].name} failed in a worker:\n{payload}")
        if kind == "result":
            result = from_bytes(payload)
            result.attempts = attempt
        elif attempt < MAX_ATTEMPTS:
            log.warning("%s: %s; trying it once more", self.jobs[index].name, payload)
            self.waiting.appendleft((index, attempt + 1))
            return
        else:
            log.warning("%s: %s, again: its child is scored invalid", self.jobs[index].name, payload)
            what, _, detail = payload.partition(": ")
            result = JobResult(self.jobs[index].name, error=f"{what} twice: {detail}", attempts=attempt)
        self.results[index] = result
        if self.on_result is not None:
            self.on_result(result)

    def all_done(self) -> list[JobResult]:
        assert all(result is not None for result in self.results)
        return self.results  # type: ignore[return-value]
