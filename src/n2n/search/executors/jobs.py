"""What an executor trains: a job per child, a result per job, and the training itself.

A job carries the child module itself rather than an architecture spec (teacher
spec + rewrites): a spec would make every worker hold the teacher and replay the
rewrites (tracing, channel pruning) before each job, and a child saved whole
rebuilds exactly, whatever its graph. Between processes a job and its result travel
as `torch.save` bytes: tensors go inline instead of through shared-memory handles,
and `map_location` lets a CPU-only worker read a child built on a GPU.
"""
from __future__ import annotations

import io
import traceback
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...distill.data import DistillData
from ...distill.trainer import DistillConfig, distill
from ...training import NonFiniteLossError

@dataclass
class Job:
    """One child to distil and score; everything a worker needs besides the data it holds."""

    name: str  # the candidate's key (e.g. removal-e0-r2): names the job in logs
    child: nn.Module
    config: DistillConfig
    seed: int
    # trains on the first `images` of the worker's training data (None: all of it): the search's
    # screen and its longer re-score share the one training subset its workers hold
    images: int | None = None


@dataclass
class JobResult:
    name: str
    val_accuracy: float = 0.0
    seconds: float = 0.0
    weights: dict[str, torch.Tensor] | None = None  # the trained child's state dict
    error: str | None = None  # why the child is invalid (diverged, worker died twice)
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def run_job(job: Job, data: DistillData) -> JobResult:
    """Distil the job's child (in place) and score it; a diverging child is a result, not an error."""
    data = data if job.images is None else data.head(job.images)
    try:
        outcome = distill(job.child, data, job.config, seed=job.seed)
    except NonFiniteLossError as error:
        return JobResult(job.name, error=f"distillation diverged ({error})")
    return JobResult(job.name, outcome.val_accuracy, outcome.seconds, job.child.state_dict())


def run_attempt(job_bytes: bytes, data: DistillData) -> tuple[str, Any]:
    """A worker's side of one attempt: ("result", result bytes), ("failed", why it could not train)
    or ("raised", the traceback of an error in the training itself)."""
    job = from_bytes(job_bytes, data.train_images.device)
    try:
        return "result", to_bytes(run_job(job, data))
    except torch.cuda.OutOfMemoryError as error:  # a resource failure like a killed worker: worth one more try
        return "failed", f"out of memory: {str(error).splitlines()[0]}"
    except Exception:  # a bug, not bad luck: the search stops on it as it would inline
        return "raised", traceback.format_exc()


def to_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def from_bytes(payload: bytes, device: torch.device | str = "cpu") -> Any:
    # whole modules and results: only ever bytes this package wrote itself
    return torch.load(io.BytesIO(payload), map_location=device, weights_only=False)
