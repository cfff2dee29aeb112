"""What the search writes down: one record per scored candidate and per policy epoch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CandidateRecord:
    stage: str
    epoch: int
    rollout: int
    actions: list[Any]
    reward: float
    params: int = 0
    flops: int = 0
    val_accuracy: float = 0.0
    seconds: float = 0.0
    cached: bool = False
    valid: bool = True
    reason: str | None = None
    kind: str = field(default="candidate", init=False)


@dataclass
class EpochRecord:
    stage: str
    epoch: int
    reward_mean: float
    reward_max: float
    baseline: float
    entropy: float
    policy_loss: float
    best_reward: float
    best_params: int
    best_val_accuracy: float
    seconds: float
    kind: str = field(default="epoch", init=False)


@dataclass
class TeacherRecord:
    """First line of a run's metrics: what every candidate is compared with."""

    params: int
    flops: int
    val_accuracy: float
    kind: str = field(default="teacher", init=False)
